"""Memory per stream: RSS of one scorer process holding 10k, 100k and 1M streams, and 1M distinct
streams through a table bounded at 100k (`state.max_streams`), each in a fresh subprocess.

    python -m bench.memory --streams 100000 --max-streams 100000   # one case, prints JSON
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import numpy as np

CASES = [(10_000, 10_000), (100_000, 100_000), (1_000_000, 1_000_000), (1_000_000, 100_000)]
SMOKE_CASES = [(2_000, 2_000), (4_000, 1_000)]


def rss_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def case(streams: int, max_streams: int) -> dict[str, Any]:
    from bench.scoring import events, random_embeddings, random_weights
    from detector.config import Settings
    from detector.core.features import FeatureSpec
    from detector.core.scorer import lstm_scorer
    from detector.core.scoring import Normalizer
    from detector.core.state import _FIELDS

    s = Settings()
    spec = random_embeddings(FeatureSpec.from_config(s.features), 5)
    f, u, w = spec.n_features, s.model.units, s.model.window
    batch = min(2000, max_streams)  # the daemon's default max_poll_records; a batch must fit the table
    evs = events(spec, batch, 1, 3)  # one batch of parsed events, re-labelled with new stream ids below
    wts = random_weights(f, u, w, 1)
    norm = Normalizer(np.zeros(f, np.float32), np.ones(f, np.float32))
    sc = lstm_scorer(wts, norm, spec, w, 3, max_streams, 0.5)
    table = sc.table
    base = rss_kb()
    for k in range(0, streams, batch):
        n = min(batch, streams - k)
        for i in range(n):
            object.__setattr__(evs[i], "stream_id", f"card-{k + i:09d}")
        sc.score_many(evs[:n], 0.0)
    held = len(table)
    grown = rss_kb() - base
    arrays = sum(getattr(table, name).nbytes for name in _FIELDS) // max(table.capacity, 1)
    return {
        "streams_seen": streams,
        "max_streams": max_streams,
        "streams_held": held,
        "evictions": table.evictions,
        "rss_growth_mb": grown / 1024,
        "rss_bytes_per_held_stream": grown * 1024 / max(held, 1),
        "array_bytes_per_stream": arrays,
    }


def run(smoke: bool = False) -> dict[str, Any]:
    out = []
    for streams, cap in SMOKE_CASES if smoke else CASES:
        r = subprocess.run(
            [sys.executable, "-m", "bench.memory", "--streams", str(streams), "--max-streams", str(cap)],
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(r.stdout.strip().splitlines()[-1])
        out.append(res)
        print(
            f"  {streams:>9,} streams (max_streams {cap:,}): holds {res['streams_held']:,}, "
            f"RSS +{res['rss_growth_mb']:.0f} MB = {res['rss_bytes_per_held_stream']:,.0f} bytes per held stream "
            f"({res['array_bytes_per_stream']:,} in arrays), {res['evictions']:,} evictions",
            flush=True,
        )
    return {"cases": out}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--max-streams", type=int, required=True)
    a = p.parse_args()
    print(json.dumps(case(a.streams, a.max_streams)))
