"""BENCH_METRICS=1 diagnosis of a latency run: where each anomaly's time went."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson

DIAGNOSTIC_METRICS = (
    "detector_batch_duration",
    "detector_checkpoint_duration",
    "detector_events_total",
    "detector_dead_letter_total",
    "detector_alerts_total",
    "detector_output_retries_total",
    "detector_input_paused",
)


def diagnose(
    bootstrap: str,
    alerts_topic: str,
    parts: Any,
    port: int,
    sent: dict[str, float],
    seen_in: dict[str, float],
    detected: dict[str, float],
    got: dict[str, float],
    wall0: float,
    load_s: float,
    cons: Any,
    read_upto: dict[int, int],
) -> None:
    """BENCH_METRICS=1: where each anomaly's time went (sent -> readable in the input topic ->
    scored -> read), second by second of the load, the slowest 1%, the unalerted ones looked up,
    and the daemon's batch and checkpoint histograms."""
    import urllib.request

    def pct(xs: list[float], q: float) -> int | None:
        return round(float(np.percentile(xs, q)) * 1000) if xs else None

    legs = (("total", sent, got), ("sent to readable", sent, seen_in), ("readable to scored", seen_in, detected))
    for name, a, b in legs:
        xs = [b[k] - a[k] for k in sent if k in a and k in b]
        by_second = [
            [b[k] - a[k] for k in sent if k in a and k in b and sec <= sent[k] - wall0 < sec + 1]
            for sec in range(int(load_s) + 1)
        ]
        print(
            f"{name}: p50 {pct(xs, 50)} p99 {pct(xs, 99)} ms; p99 by second of the load:",
            [pct(x, 99) for x in by_second],
        )
    _print_slowest(sent, seen_in, detected, got, wall0)
    missing = [k for k in sent if k not in got]
    print("not alerted:", [(k, "readable" if k in seen_in else "never readable") for k in missing[:10]])
    if missing:
        _look_up_unalerted(bootstrap, alerts_topic, parts, missing, sent, cons, read_upto)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    print("\n".join(x for x in text.splitlines() if x.startswith(DIAGNOSTIC_METRICS)))


def _print_slowest(
    sent: dict[str, float], seen_in: dict[str, float], detected: dict[str, float], got: dict[str, float], start: float
) -> None:
    """The slowest 1% of alerted anomalies: when each was sent (seconds into the load) and where
    its time went, in ms."""
    done = sorted((got[k] - sent[k], k) for k in sent if k in got and k in seen_in and k in detected)
    for lat, k in done[-max(len(done) // 100, 1) :]:
        parts = (seen_in[k] - sent[k], detected[k] - seen_in[k], got[k] - detected[k])
        print(
            f"slow: sent at +{sent[k] - start:.2f} s, total {lat * 1000:.0f} = readable {parts[0] * 1000:.0f} "
            f"+ scored {parts[1] * 1000:.0f} + read {parts[2] * 1000:.0f} ms"
        )


def _look_up_unalerted(
    bootstrap: str,
    topic: str,
    parts: Any,
    missing: list[str],
    sent: dict[str, float],
    live: Any,
    read_upto: dict[int, int],
) -> None:
    """Were the unalerted anomalies in the alerts topic all along? Its end offsets now, then a
    fresh reader from the beginning, against where the live reader stopped (diagnosis only)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from detector.core.features import parse_timestamp

    ends = {p: live.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in parts}
    print("alerts topic end offsets now:", ends)
    fresh = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}", "enable.auto.commit": False})
    fresh.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    found: dict[str, tuple[float, int, int, float]] = {}
    quiet_until = time.monotonic() + 5
    while time.monotonic() < quiet_until:
        m = fresh.poll(0.2)
        if m is not None and m.error() is None:
            a = orjson.loads(m.value() or b"{}")
            found[a.get("event_id")] = (
                parse_timestamp(a["detected_at"]),
                m.partition(),
                m.offset(),
                m.timestamp()[1] / 1000,
            )
            quiet_until = time.monotonic() + 5
    fresh.close()
    print(
        "of those, in the alerts topic now (ms from sent to detected_at, partition, offset, ms from sent to appended):",
        [
            (k, round((found[k][0] - sent[k]) * 1000, 1), *found[k][1:3], round((found[k][3] - sent[k]) * 1000))
            for k in missing
            if k in found
        ],
        f"({len(found)} alerts); the live reader read up to offsets {read_upto}",
    )
