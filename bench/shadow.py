"""The cost of a challenger in shadow (`model.shadow_path`): the daemon's per-batch work (intake,
score, alerts, metrics, and for the challenger its own scoring, would-be alerts and agreement)
with and without one, in alternating runs of the same process; and memory per stream with one
model and with two, each in a fresh subprocess.

Kafka is left out on purpose: it costs the same with or without a challenger (the would-be alerts
are rare), so it would only dilute the ratio. Models are random weights of the default size
(F=22 features, W=16, 32 units) with calibrated evidence, thresholds set so that alerts are rare.

    python -m bench.shadow --memory 100000 --models 2     # one memory case, prints JSON
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import orjson

from bench.scoring import random_embeddings, random_evidence, random_weights
from detector.config import Settings
from detector.core.features import FeatureSpec
from detector.core.scoring import Normalizer
from detector.core.threshold import Threshold
from detector.kafka.base import Record
from detector.offline.model import Artifact

BATCH = 1000  # what one poll returns under load (kafka.max_poll_records' order)
MEMORY_CASES = [10_000, 100_000]


def artifact(seed: int) -> Artifact:
    """A model of the default size with random weights and embedding tables (the daemon binds them)."""
    unbound = FeatureSpec(Settings().features)
    rng = np.random.default_rng(seed)
    tables = {unbound.categorical[i].name: rng.standard_normal((unbound.categorical[i].buckets, d))
              for i, _, d in unbound.embedded}  # fmt: skip
    spec = unbound.with_embeddings(tables)
    f, u, w = spec.n_features, 32, 16
    meta = {
        "version": f"bench{seed:07d}",
        "window": w,
        "prediction_weight": 0.8,
        "evidence": random_evidence(spec, seed).to_dict(),
        "embeddings": {k: v.tolist() for k, v in tables.items()},
    }
    norm = Normalizer(np.zeros(f, np.float32), np.ones(f, np.float32))
    return Artifact(random_weights(f, u, w, seed), norm, Threshold(1e9, 2e9, "quantile", 1e-4, 1000), meta)


def records(n: int, streams: int, seed: int, now: float) -> list[Record]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, streams, n)
    cats, countries, chans = ["grocery", "fuel", "retail"], ["US", "DE", "FR"], ["pos", "ecom", "atm"]
    out = []
    for i in range(n):
        sid = f"s{ids[i]}"
        value = orjson.dumps({"event_id": f"e{seed}-{i}", "stream_id": sid, "ts": now - n + i,
                              "amount": float(rng.lognormal(3, 1)), "channel": chans[i % 3],
                              "country": countries[i % 3], "merchant_category": cats[i % 3]})  # fmt: skip
        out.append(Record("events", int(ids[i]) % 4, i, sid.encode(), value, 0))
    return out


class _Session:
    """Where the loop hands alerts: counted, not sent (Kafka is not what is measured)."""

    def __init__(self) -> None:
        self.alerts = self.shadow = 0

    def publish(self, alerts: list[Any], dead: list[Any]) -> None:
        self.alerts += len(alerts)

    def publish_shadow(self, alerts: list[Any]) -> None:
        self.shadow += len(alerts)


def detector(challenger: bool) -> Any:
    from detector.service.loop import Detector

    app = Detector(Settings(), artifact=artifact(1))
    if challenger:
        app._challenge(artifact(2))
    app.session = _Session()  # type: ignore[assignment]
    return app


def throughput(smoke: bool) -> dict[str, Any]:
    streams, n = (1_000, 4_000) if smoke else (10_000, 100_000)
    now = time.time()
    warm = records(streams * 16, streams, 99, now)
    run = records(n, streams, 7, now)
    apps = {}
    for name, challenger in (("champion only", False), ("with a challenger", True)):
        app = detector(challenger)
        app.clock = lambda: now
        for k in range(0, len(warm), BATCH):  # steady state: every stream has a window of events
            app._process(warm[k : k + BATCH])
        apps[name] = app
    del warm
    gc.collect()
    gc.freeze()

    def once(app: Any) -> float:
        offset = app.table.offset
        offset[:] = -1  # the same records again: none is skipped as already applied
        if app.challenger is not None:
            app.challenger.table.offset[:] = -1
        t0 = time.perf_counter()
        for k in range(0, len(run), BATCH):
            app._process(run[k : k + BATCH])
        return len(run) / (time.perf_counter() - t0)

    reps = 1 if smoke else 5
    # Alternating A/B in one process: this VM's speed swings by 30% from hour to hour.
    rates: dict[str, list[float]] = {name: [] for name in apps}
    for app in apps.values():
        once(app)  # a warm-up round each
    for _ in range(reps):
        for name, app in apps.items():
            rates[name].append(once(app))
    gc.unfreeze()
    med = {name: float(np.median(r)) for name, r in rates.items()}
    ratio = med["champion only"] / med["with a challenger"]
    print(
        f"  loop work per batch of {BATCH}, {streams:,} streams: champion only {med['champion only']:,.0f} ev/s, "
        f"with a challenger {med['with a challenger']:,.0f} ev/s: {ratio:.2f}x the cost per event",
        flush=True,
    )
    return {
        "streams": streams,
        "events": n,
        "batch": BATCH,
        "reps": reps,
        "events_per_s": {k: [round(x) for x in v] for k, v in rates.items()},
        "median_events_per_s": {k: round(v) for k, v in med.items()},
        "cost_ratio": round(ratio, 3),
    }


def memory_case(streams: int, models: int) -> dict[str, Any]:
    from bench.memory import rss_kb
    from bench.scoring import events
    from detector.core.scorer import lstm_scorer

    spec = random_embeddings(FeatureSpec(Settings().features), 5)
    f, u, w = spec.n_features, 32, 16
    norm = Normalizer(np.zeros(f, np.float32), np.ones(f, np.float32))
    scorers = [lstm_scorer(random_weights(f, u, w, k), norm, spec, w, 3, streams, 0.5) for k in range(models)]
    batch = min(2000, streams)
    evs = events(spec, batch, 1, 3)
    base = rss_kb()
    for k in range(0, streams, batch):
        m = min(batch, streams - k)
        for i in range(m):
            object.__setattr__(evs[i], "stream_id", f"card-{k + i:09d}")
        for sc in scorers:
            sc.score_many(evs[:m], 0.0)
    grown = rss_kb() - base
    per = grown * 1024 / streams
    return {"streams": streams, "models": models, "rss_growth_mb": grown / 1024, "rss_bytes_per_stream": per}


def memory(smoke: bool) -> list[dict[str, Any]]:
    out = []
    for streams in [2_000] if smoke else MEMORY_CASES:
        for models in (1, 2):
            r = subprocess.run(
                [sys.executable, "-m", "bench.shadow", "--memory", str(streams), "--models", str(models)],
                capture_output=True,
                text=True,
                check=True,
            )
            res = json.loads(r.stdout.strip().splitlines()[-1])
            out.append(res)
            print(
                f"  {streams:>9,} streams, {models} model(s): RSS +{res['rss_growth_mb']:.0f} MB = "
                f"{res['rss_bytes_per_stream']:,.0f} bytes per stream",
                flush=True,
            )
    return out


def run(smoke: bool = False) -> dict[str, Any]:
    return {"throughput": throughput(smoke), "memory": memory(smoke)}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--memory", type=int, required=True, help="streams")
    p.add_argument("--models", type=int, default=1)
    a = p.parse_args()
    print(json.dumps(memory_case(a.memory, a.models)))
