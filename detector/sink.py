"""Kafka output: alerts and dead letters through one idempotent producer with acks=all.

with KafkaSink(settings.kafka) as sink:
    sink.send("alerts", key=b"card-1", value=b"{...}")
    sink.flush(timeout=10)      # raises DeliveryFailed unless every send since is acknowledged
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

from detector.config import KafkaConfig
from detector.exceptions import DetectorError
from detector.kafka_client import client_options

log = logging.getLogger(__name__)


class DeliveryFailed(DetectorError):
    """A produced message was not acknowledged; offsets for its batch must not be committed."""


def all_acked(futures: list[Any]) -> bool:
    """True when every future (`is_done`, `failed()`, `exception`) is acknowledged; raises
    DeliveryFailed if one failed. Shared by both clients' sinks."""
    done = True
    for f in futures:
        if not f.is_done:
            done = False
        elif f.failed():
            raise DeliveryFailed(f"message not acknowledged: {f.exception}")
    return done


def check_flushed(pending: list[Any]) -> int:
    """After a flush: how many were acknowledged, or DeliveryFailed naming the first failure."""
    failed = [f for f in pending if not f.is_done or f.failed()]
    if failed:
        why = failed[0].exception if failed[0].is_done else "timed out"
        raise DeliveryFailed(f"{len(failed)} of {len(pending)} messages not acknowledged: {why}")
    return len(pending)


class KafkaSink:
    def __init__(self, cfg: KafkaConfig, linger_ms: int = 2, batch_bytes: int = 1 << 20) -> None:
        self.cfg = cfg
        self.linger_ms, self.batch_bytes = linger_ms, batch_bytes
        self._producer: Any = None
        self._pending: list[Any] = []

    def __enter__(self) -> KafkaSink:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            acks="all",
            enable_idempotence=True,
            # 2 ms: alerts are few; batching them longer would only add latency.
            linger_ms=self.linger_ms,
            batch_size=self.batch_bytes,
            retries=5,
            **client_options(self.cfg),
        )
        return self

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        track: bool = True,
    ) -> Any:
        """Send; returns the future. `track=False` leaves it out of flush()'s check (the caller
        watches it itself, e.g. to retry alerts)."""
        from kafka.errors import KafkaError

        try:
            fut = self._producer.send(topic, key=key, value=value, headers=headers or [], partition=partition)
        except KafkaError as exc:  # e.g. no metadata for the topic within max_block_ms
            raise DeliveryFailed(f"send to {topic} failed: {exc}") from None
        if track:
            self._pending.append(fut)
        return fut

    def produce(self, topic: str, key: bytes | None, value: bytes, done: Callable[[str | None], None]) -> None:
        """Fire-and-count for bulk sends (replay): `done(None)` on ack, `done(reason)` on failure."""
        fut = self._producer.send(topic, key=key, value=value)
        fut.add_callback(lambda _: done(None)).add_errback(lambda exc: done(str(exc)))

    def take_pending(self) -> list[Any]:
        """Hand over the futures of every send so far (an incremental checkpoint tracks them)."""
        pending, self._pending = self._pending, []
        return pending

    @staticmethod
    def all_acked(futures: list[Any]) -> bool:
        return all_acked(futures)

    def flush(self, timeout: float) -> int:
        """Wait for every pending send; returns how many were acknowledged."""
        from kafka.errors import KafkaError

        pending, self._pending = self._pending, []
        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:
            raise DeliveryFailed(f"flush failed: {exc}") from None
        return check_flushed(pending)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._producer is not None:
            from kafka.errors import KafkaError

            try:
                self._producer.close(timeout=5)
            except KafkaError as exc:  # broker away: what was not acknowledged was not committed either
                log.warning("producer closed with messages unacknowledged (they were not committed): %s", exc)
