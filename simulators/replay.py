"""Replay a JSONL file into Kafka, keyed by stream id, at a chosen pace.

    result = replay("cards.jsonl", settings.kafka, topic="events", rate=5000)
    result.sent, result.acked, result.failed

Pacing: `rate` events/s held by a monotonic schedule; `speed` compresses the file's own
timestamps X times; neither means as fast as possible. Waits for every acknowledgement.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from detector.config import KafkaConfig
from detector.features import parse_timestamp
from detector.kafka_client import client_options
from simulators.output import read_jsonl

# Print progress at most this often: readable, and cheap next to the sends.
PROGRESS_EVERY_S = 1.0


@dataclass
class ReplayResult:
    sent: int = 0
    acked: int = 0
    failed: int = 0
    seconds: float = 0.0
    first_error: str | None = None


def replay(
    path: str | Path,
    cfg: KafkaConfig,
    topic: str,
    rate: float | None = None,
    speed: float | None = None,
    stream_field: str = "stream_id",
    time_field: str = "ts",
    progress: bool = True,
    stop: threading.Event | None = None,
) -> ReplayResult:
    from kafka import KafkaProducer

    stop = stop or threading.Event()
    res = ReplayResult()
    producer = KafkaProducer(
        acks="all", enable_idempotence=True, linger_ms=20, batch_size=256 * 1024, **client_options(cfg)
    )

    def ok(_: object) -> None:
        res.acked += 1

    def bad(exc: BaseException) -> None:
        res.failed += 1
        res.first_error = res.first_error or str(exc)

    t0 = time.monotonic()
    last_print = t0
    first_ts: float | None = None
    try:
        for line in read_jsonl(path):
            key = None
            due = None
            if rate:
                due = t0 + res.sent / rate
            try:
                rec = orjson.loads(line)
                sid = rec.get(stream_field) if isinstance(rec, dict) else None
                key = str(sid).encode() if sid is not None else None
                if speed and isinstance(rec, dict) and time_field in rec:
                    ts = parse_timestamp(rec[time_field])
                    first_ts = ts if first_ts is None else first_ts
                    due = t0 + (ts - first_ts) / speed
            except Exception:  # noqa: BLE001, S110 - a bad line is still replayed: the detector must dead-letter it
                pass
            if due is not None:
                wait = due - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
            if stop.is_set():
                break
            producer.send(topic, key=key, value=line).add_callback(ok).add_errback(bad)
            res.sent += 1
            now = time.monotonic()
            if progress and now - last_print >= PROGRESS_EVERY_S:
                last_print = now
                el = now - t0
                print(
                    f"\rreplay: sent {res.sent}  acked {res.acked}  {res.sent / el:,.0f} ev/s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        producer.flush()
    finally:
        producer.close(timeout=10)
    res.seconds = time.monotonic() - t0
    if progress:
        print(
            f"\rreplay: sent {res.sent}  acked {res.acked}  failed {res.failed}  in {res.seconds:.1f}s "
            f"({res.sent / max(res.seconds, 1e-9):,.0f} ev/s)",
            file=sys.stderr,
        )
    return res
