"""Latency at one offered rate, several runs, one broker: `PYTHONPATH=. python -m bench.latency_probe 5000 5`
(arguments: rate, runs, client, seconds per run; defaults 5000, 3, confluent, 10).

A quicker loop than the full e2e suite for tuning the 5,000 events/s latency target. With the
client `broker`, no daemon runs: the same paced load, and each marked event timed from produce to
readable by a consumer, the floor the broker and the load generator set on this machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    from bench.e2e import harness
    from bench.e2e.latency import LEAD_S, latency
    from detector.config import Settings

    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 5000.0
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    client = sys.argv[3] if len(sys.argv) > 3 else "confluent"
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
    base = Settings()
    with tempfile.TemporaryDirectory() as tmpd, harness.LocalBroker() as broker:
        tmp = Path(tmpd)
        lines = harness.card_lines(int(rate * (seconds + LEAD_S)), 10_000, 8)
        # The broker's JIT warms up over ~30 s of load (a cold broker alone adds seconds of
        # produce-to-readable delay): a million events through it first, as the e2e suite does.
        warm = harness.card_lines(500_000, 10_000, 9)
        loader = "confluent" if client == "broker" else client
        for k in range(2):
            harness.produce(broker.bootstrap, f"warm-{k}", warm, loader)
            harness.bare_consume(broker.bootstrap, f"warm-{k}", len(warm), loader)
        if client == "broker":
            for _ in range(reps):
                pct = _broker_only(broker.bootstrap, lines, rate, seconds)
                print(f"broker only, {rate:,.0f} ev/s: produce->readable p50/p95/p99 {pct} ms", flush=True)
            return
        model = harness.train_model(base, tmp, False)
        latency(base, broker.bootstrap, model, lines, rate, 5, tmp, client, lead_s=0)
        for _ in range(reps):
            r = latency(base, broker.bootstrap, model, lines, rate, seconds, tmp, client)
            print(
                f"{client} {rate:,.0f} ev/s: p50 {r['p50_ms']:.1f} p95 {r['p95_ms']:.1f} p99 {r['p99_ms']:.1f} ms "
                f"after {r['lead_in_s']:.0f} s (p99 {r['cold_start_p99_ms']:.0f} ms before) "
                f"({r['alerts_read']}/{r['anomalies']}); sent->scored p50/p99 {r['sent_to_scored_p50_p99_ms']}, "
                f"scored->read {r['scored_to_read_p50_p99_ms']}; load not delivered: {r['load_delivery_failures']}",
                flush=True,
            )


def _broker_only(bootstrap: str, lines: list[bytes], rate: float, seconds: float) -> list[float]:
    """Produce->readable of every 50th event at `rate`, no daemon: bench.e2e.latency's load and reader."""
    import threading
    import time
    import uuid

    import numpy as np
    import orjson
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    from bench.e2e.latency import LOAD_LINGER_MS

    topic = f"floor-{uuid.uuid4().hex[:6]}"
    prod = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": LOAD_LINGER_MS})
    prod.produce(topic, b"{}")  # auto-creates the topic (4 partitions, as the daemon's)
    prod.flush(10)
    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "fetch.wait.max.ms": 5})
    parts = cons.list_topics(topic, timeout=10).topics[topic].partitions
    cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            m = cons.poll(0.05)
            v = m.value() if m is not None and m.error() is None else None
            if v and b'"mark"' in v:
                seen.setdefault(orjson.loads(v)["event_id"], time.time())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    n, t0 = int(rate * seconds), time.monotonic()
    for i, x in enumerate(lines[:n]):
        wait = t0 + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        ev = orjson.loads(x)
        ev["event_id"] = f"{topic}-{i}"
        if i % 50 == 49:
            ev["mark"] = True
            sent[ev["event_id"]] = time.time()
        prod.produce(topic, orjson.dumps(ev), ev["stream_id"].encode())
        prod.poll(0)
    prod.flush(10)
    end = time.monotonic() + 30
    while len(seen) < len(sent) and time.monotonic() < end:
        time.sleep(0.1)
    stop.set()
    reader.join(5)
    cons.close()
    lat = np.array([seen[k] - sent[k] for k in sent if k in seen]) * 1000
    return [round(float(v), 1) for v in np.percentile(lat, [50, 95, 99])] if len(lat) else []


if __name__ == "__main__":
    main()
