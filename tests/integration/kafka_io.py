"""Real kafka-python producers and consumers for the integration tests."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def produce(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [p.send(topic, key=k, value=v) for k, v in items]
        p.flush()
        for f in futures:
            f.get(timeout=30)
    finally:
        p.close()


def read_all(
    bootstrap: str, topic: str, expect: int | None = None, timeout: float = 30.0, committed_only: bool = False
) -> list[Any]:
    """Every record of `topic` from the beginning; with `expect`, poll until that many arrived.
    `committed_only`: as a read_committed consumer sees it (up to the last stable offset, no
    record of an aborted or open transaction)."""
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
        isolation_level="read_committed" if committed_only else "read_uncommitted",
    )
    try:
        deadline = time.monotonic() + timeout
        parts: list[int] = []
        while not parts and time.monotonic() < deadline:
            parts = sorted(c.partitions_for_topic(topic) or [])
        tps = [TopicPartition(topic, p) for p in parts]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out: list[Any] = []
        while time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200).values():
                out.extend(recs)
            done = all(c.position(tp) >= end[tp] for tp in tps)
            if expect is None and done:
                break
            if expect is not None and len(out) >= expect:
                break
            if expect is not None and done:
                end = c.end_offsets(tps)
        return out
    finally:
        c.close()


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = c.partitions_for_topic(topic) or set()
        out = {}
        for p in parts:
            off = c.committed(TopicPartition(topic, p))
            out[p] = off if off is not None else 0
        return out
    finally:
        c.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or []]
        return {tp.partition: o for tp, o in c.end_offsets(tps).items()}
    finally:
        c.close()


def all_committed(bootstrap: str, group: str, topic: str) -> bool:
    """The group has committed every partition of `topic` up to its end."""
    return committed(bootstrap, group, topic) == end_offsets(bootstrap, topic)
