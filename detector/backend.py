"""The Kafka client behind one small interface, chosen by `kafka.client`.

    source = make_source(settings.kafka, on_assign, on_revoke)   # KafkaSource or ConfluentSource
    sink = make_sink(settings.kafka)                               # KafkaSink or ConfluentSink

The loop, replay and the changelog reader use only the methods of `Source` and `Sink` below;
kafka-python is the default, confluent (librdkafka) the fast option (`pip install 'detector[fast]'`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from detector.config import KafkaConfig
from detector.sink import KafkaSink
from detector.source import KafkaSource, Partition, Record


class Source(Protocol):
    def __enter__(self) -> Source: ...
    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None, /
    ) -> None: ...
    def poll(self) -> list[Record]: ...
    def commit(self, next_offsets: dict[Partition, int], blocking: bool = True) -> None: ...
    def lag(self) -> dict[int, int]: ...
    def assignment(self) -> list[Partition]: ...
    def pause(self, paused: bool) -> None: ...


class Sink(Protocol):
    def __enter__(self) -> Sink: ...
    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None, /
    ) -> None: ...
    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        track: bool = True,
    ) -> Any: ...
    def produce(self, topic: str, key: bytes | None, value: bytes, done: Callable[[str | None], None]) -> None: ...
    def take_pending(self) -> list[Any]: ...
    def all_acked(self, futures: list[Any]) -> bool: ...
    def flush(self, timeout: float) -> int: ...


def make_source(
    cfg: KafkaConfig,
    on_assign: Callable[[list[Partition]], None] | None = None,
    on_revoke: Callable[[list[Partition]], None] | None = None,
) -> Source:
    if cfg.client == "confluent":
        from detector.confluent import ConfluentSource

        return ConfluentSource(cfg, on_assign, on_revoke)
    return KafkaSource(cfg, on_assign, on_revoke)


def make_sink(cfg: KafkaConfig, linger_ms: int = 2, batch_bytes: int = 1 << 20) -> Sink:
    if cfg.client == "confluent":
        from detector.confluent import ConfluentSink

        return ConfluentSink(cfg, linger_ms, batch_bytes)
    return KafkaSink(cfg, linger_ms, batch_bytes)
