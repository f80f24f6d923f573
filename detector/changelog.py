"""Reading the compacted state changelog back, one input partition at a time.

    for key, value in read_partition(settings.kafka, partition=3):
        ...   # value None is a tombstone (the stream was evicted)

Changelog partition p holds the state of the streams of input partition p (the daemon writes it
with an explicit partition), so an instance restores exactly the partitions it was assigned.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from detector.config import KafkaConfig
from detector.exceptions import KafkaUnavailable
from detector.kafka_client import REQUEST_TIMEOUT_MS, client_options

# Restoring 100k streams reads ~170 MB; a minute covers a slow broker on a loaded machine.
RESTORE_TIMEOUT_S = 60.0


def read_partition(cfg: KafkaConfig, partition: int) -> Iterator[tuple[str, bytes | None]]:
    """Every (key, value) of one changelog partition, from the beginning to its end now."""
    if cfg.client == "confluent":
        from detector import confluent

        return confluent.read_partition(cfg, partition, RESTORE_TIMEOUT_S)
    return _read_kafka_python(cfg, partition)


def _read_kafka_python(cfg: KafkaConfig, partition: int) -> Iterator[tuple[str, bytes | None]]:
    from kafka.errors import KafkaError

    try:
        yield from _read(cfg, partition)
    except KafkaError as exc:
        raise KafkaUnavailable(f"restoring {cfg.state_topic}[{partition}] failed: {exc}") from None


def _read(cfg: KafkaConfig, partition: int) -> Iterator[tuple[str, bytes | None]]:
    from kafka import KafkaConsumer, TopicPartition

    opts: dict[str, Any] = {**client_options(cfg), "client_id": f"detector-restore-{cfg.group_id}"}
    c = KafkaConsumer(
        enable_auto_commit=False,
        request_timeout_ms=max(REQUEST_TIMEOUT_MS, 30_000),
        max_partition_fetch_bytes=8 << 20,
        **opts,
    )
    try:
        tp = TopicPartition(cfg.state_topic, partition)
        c.assign([tp])
        c.seek_to_beginning(tp)
        deadline = time.monotonic() + RESTORE_TIMEOUT_S

        def left_ms() -> int:  # every client call bounded: without a timeout they may wait forever
            return max(int((deadline - time.monotonic()) * 1000), 1)

        end = c.end_offsets([tp], timeout_ms=left_ms())[tp]
        while c.position(tp, timeout_ms=left_ms()) < end:
            if time.monotonic() > deadline:
                where = f"{cfg.state_topic}[{partition}]"
                raise KafkaUnavailable(f"restoring {where} did not finish in {RESTORE_TIMEOUT_S}s")
            for records in c.poll(timeout_ms=200).values():
                for m in records:
                    if m.offset < end and m.key is not None:
                        yield m.key.decode("utf-8", "replace"), m.value
    finally:
        c.close()
