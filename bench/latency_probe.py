"""Latency at one offered rate, several runs, one broker: `PYTHONPATH=. python -m bench.latency_probe 5000 5`.

A quicker loop than the full e2e suite for tuning the 5,000 events/s latency target.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    from bench import e2e
    from detector.config import Settings

    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 5000.0
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    client = sys.argv[3] if len(sys.argv) > 3 else "confluent"
    base = Settings()
    with tempfile.TemporaryDirectory() as tmpd, e2e.LocalBroker() as broker:
        tmp = Path(tmpd)
        model = e2e._model(base, tmp, False)
        lines = e2e._lines(int(rate * 10), 10_000, 8)
        # The broker's JIT warms up over ~30 s of load (a cold broker alone adds seconds of
        # produce-to-readable delay): a million events through it first, as the e2e suite does.
        warm = e2e._lines(500_000, 10_000, 9)
        for k in range(2):
            e2e._produce(broker.bootstrap, f"warm-{k}", warm, client)
            e2e._bare_consume(broker.bootstrap, f"warm-{k}", len(warm), client)
        e2e._latency(base, broker.bootstrap, model, lines, rate, 5, tmp, client)
        for _ in range(reps):
            r = e2e._latency(base, broker.bootstrap, model, lines, rate, 10, tmp, client)
            print(
                f"{client} {rate:,.0f} ev/s: p50 {r['p50_ms']:.1f} p95 {r['p95_ms']:.1f} p99 {r['p99_ms']:.1f} ms "
                f"({r['alerts_read']}/{r['anomalies']}); sent->scored p50/p99 {r['sent_to_scored_p50_p99_ms']}, "
                f"scored->read {r['scored_to_read_p50_p99_ms']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
