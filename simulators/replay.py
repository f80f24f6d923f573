"""Replay a JSONL file into Kafka, keyed by stream id, at a chosen pace.

    result = replay("cards.jsonl", settings.kafka, topic="events", rate=5000)
    result.sent, result.acked, result.failed

Pacing: `rate` events/s held by a monotonic schedule; `speed` compresses the file's own
timestamps X times; neither means as fast as possible. Waits for every acknowledgement.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from detector.config import KafkaConfig
from detector.core.features import parse_timestamp
from detector.exceptions import DetectorError
from detector.jsonl import read_jsonl
from detector.kafka.base import DeliveryFailed
from detector.kafka.factory import client_for

# Print progress at most this often: readable, and cheap next to the sends.
PROGRESS_EVERY_S = 1.0
# After the last send, wait this long for the acknowledgements before reporting the rest unacked.
FLUSH_TIMEOUT_S = 120.0


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
    stop = stop or threading.Event()
    res = ReplayResult()

    def done(err: str | None) -> None:
        if err is None:
            res.acked += 1
        else:
            res.failed += 1
            res.first_error = res.first_error or err

    lines = read_jsonl(path)
    head = list(itertools.islice(lines, 1))  # an unreadable file fails here, before connecting
    t0 = time.monotonic()
    last_print = t0
    first_ts: float | None = None
    with contextlib.ExitStack() as stack:
        try:
            # 20 ms linger, 256 KiB batches: replay is about throughput, not the latency of one event.
            producer = stack.enter_context(client_for(cfg).sink(linger_ms=20, batch_bytes=256 * 1024))
        except Exception as exc:  # noqa: BLE001 - each client has its own connection errors
            why = f"{type(exc).__name__}: {exc}"
            raise DetectorError(f"replay: cannot connect to {cfg.bootstrap_servers} ({why})") from None
        for line in itertools.chain(head, lines):
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
            producer.produce(topic, key, line, done)
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
        try:
            producer.flush(FLUSH_TIMEOUT_S)
        except DeliveryFailed as exc:
            res.first_error = res.first_error or str(exc)
    res.seconds = time.monotonic() - t0
    if progress:
        print(
            f"\rreplay: sent {res.sent}  acked {res.acked}  failed {res.failed}  in {res.seconds:.1f}s "
            f"({res.sent / max(res.seconds, 1e-9):,.0f} ev/s)",
            file=sys.stderr,
        )
    return res
