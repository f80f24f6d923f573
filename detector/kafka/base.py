"""What the rest of the daemon knows of Kafka: the record and partition types, the interfaces every
client implements, the delivery error and the acknowledgement helpers both clients share.

    client = client_for(settings.kafka)          # detector.kafka.factory
    with client.source(on_assign, on_revoke) as src, client.sink() as sink:
        for r in src.poll(): ...                 # list[Record]
        sink.send("alerts", key, value); sink.flush(timeout)   # DeliveryFailed unless all acked
    client.admin().ensure_topics(["events"]); read_changelog(client, "detector-state", 3)

Nothing outside this package imports kafka-python or confluent-kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, NamedTuple, Protocol

from detector.config import KafkaConfig
from detector.exceptions import DetectorError

Partition = tuple[str, int]
Callback = Callable[[list[Partition]], None]
# 10 s: long enough for a broker on a loaded 2-core machine, short enough to fail fast at startup.
REQUEST_TIMEOUT_MS = 10_000
# Consumers refresh topic metadata this often (see the consumers for why not the 5 min default).
METADATA_MAX_AGE_MS = 10_000
# Restoring 100k streams reads ~170 MB; a minute covers a slow broker on a loaded machine.
RESTORE_TIMEOUT_S = 60.0


class Record(NamedTuple):
    """One consumed message. A NamedTuple, not a frozen dataclass: built once per event on the hot
    path, 0.4 against 1.3 us each (measured here)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


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


class Source(Protocol):
    """A group member reading the input topic: batches, manual commits, rebalance callbacks."""

    # Called with partitions lost (the member evicted) instead of on_revoke, when set before enter.
    on_lost: Callback | None

    def __enter__(self) -> Source: ...
    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None, /
    ) -> None: ...
    def poll(self) -> list[Record]: ...
    def commit(self, next_offsets: dict[Partition, int], blocking: bool = True) -> None: ...
    def lag(self) -> dict[int, int]: ...
    def pause(self, paused: bool) -> None: ...
    def close(self, timeout: float) -> None: ...
    def group_metadata(self) -> Any:
        """The consumer's group membership now, for offsets sent to a transaction (KIP-447)."""
        ...

    def membership_lost(self) -> str | None:
        """Why this member may no longer be in the group (None: it is, as far as it knows): no
        generation, or paused past the session timeout since its last poll (a zombie whose
        client has not noticed yet; its offsets must not be committed)."""
        ...


class Sink(Protocol):
    """An idempotent acks=all producer whose sends are futures the caller can wait on."""

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
    def close(self, timeout: float) -> None: ...


class TransactionalSink(Sink, Protocol):
    """A transactional producer (`kafka.delivery: exactly_once`): its first send after a commit
    begins a transaction; `commit` adds the consumed offsets with the group's metadata and commits
    it. Any failure aborts the transaction (what it held is as if never sent) and raises
    DeliveryFailed; a fenced producer (a newer instance of its id, or a zombie whose group
    generation is gone) raises it too."""

    opened_at: float | None  # time.monotonic() of the open transaction's first record

    def commit(self, offsets: dict[Partition, int], source: Source, timeout: float) -> None: ...
    def abort(self, timeout: float) -> None: ...


class OpensTransactions:
    """What both clients' transactional sinks share: the first record after a commit or an abort
    opens the next transaction, so one never spans loop iterations idle. Mixed in before the
    client's sink, which gives `_producer`; `_client_errors()` names the client's exception types."""

    _producer: Any
    _open = False
    opened_at: float | None = None  # time.monotonic() of the open transaction's first record

    def _client_errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        track: bool = True,
    ) -> Any:
        self._begin()
        return super().send(topic, key, value, headers, partition, track)  # type: ignore[misc]

    def _begin(self) -> None:
        if not self._open:
            try:
                self._producer.begin_transaction()
            except self._client_errors() as exc:
                raise DeliveryFailed(f"beginning a transaction: {exc}") from None
            self._open = True
            self.opened_at = time.monotonic()


class Admin(Protocol):
    def partition_count(self, topic: str) -> int:
        """Partitions of an existing topic (0 if it does not exist)."""
        ...

    def ensure_topics(
        self, topics: Iterable[str], compacted: Iterable[str] = (), partitions: int | None = None
    ) -> list[str]:
        """Create the missing topics (partitions and replication from config); returns those created."""
        ...


class Client(Protocol):
    """Everything the daemon, replay and the bench open on Kafka, for one client library."""

    def source(
        self, on_assign: Callback | None = None, on_revoke: Callback | None = None, topics: Sequence[str] = ()
    ) -> Source:
        """A group member on `topics` (default: the input topic). Partitions are assigned by
        range, so partition p of co-partitioned topics (as many partitions, keyed alike) goes
        to one member: the input's and the verdicts' of the same streams."""
        ...

    def sink(self, linger_ms: int = 2, batch_bytes: int = 1 << 20) -> Sink: ...
    def transactional_sink(self, transactional_id: str, timeout_ms: int) -> TransactionalSink: ...
    def admin(self) -> Admin: ...
    def read_range(
        self, topic: str, partition: int, start: int | None, end: int | None, timeout_s: float = RESTORE_TIMEOUT_S
    ) -> Iterator[tuple[bytes | None, bytes | None, int]]:
        """(key, value, offset) of one partition from `start` (None: its beginning) up to `end`
        (exclusive; None: its end now), bounded by `timeout_s` in all."""
        ...

    def offsets_at(self, topic: str, ts_ms: int | None, timeout_s: float = RESTORE_TIMEOUT_S) -> dict[int, int]:
        """Per partition of `topic`, the first offset whose record timestamp is at or after
        `ts_ms` (Kafka's offsets-for-times), or its end offset when none is (or `ts_ms` is None)."""
        ...


def isolation(cfg: KafkaConfig) -> str:
    """What the daemon's consumers read: only committed transactions with exactly_once."""
    return "read_committed" if cfg.delivery == "exactly_once" else "read_uncommitted"


def paused_past_session(polled_at: float, session_timeout_ms: int) -> str | None:
    """A process paused (stopped, swapped out) past the group's session timeout since its last
    poll (`polled_at`, time.monotonic()) has been evicted, whatever its client believes until its
    next heartbeat: the reason, or None."""
    gap = time.monotonic() - polled_at
    if gap * 1000 > session_timeout_ms:
        return f"{gap:.1f}s since the last poll, over kafka.session_timeout_ms: the group has moved on"
    return None


def read_changelog(client: Client, topic: str, partition: int) -> Iterator[tuple[str, bytes | None]]:
    """Every (stream id, state record) of one state-changelog partition, from its beginning to its
    end now; a value of None is a tombstone. Changelog partition p holds input partition p's streams."""
    for key, value, _ in client.read_range(topic, partition, None, None, RESTORE_TIMEOUT_S):
        if key is not None:
            yield key.decode("utf-8", "replace"), value
