"""kafka-python (pure Python, the default client): source, sink, admin and changelog reader.

    client = KafkaPythonClient(settings.kafka)       # or detector.kafka.factory.client_for
    with client.source(on_assign=f, on_revoke=g) as src:
        records = src.poll()                  # list[Record], at most max_poll_records
        src.commit({("events", 0): 1234})     # next offset to read, per partition
    with client.sink() as sink:
        sink.send("alerts", key=b"card-1", value=b"{...}")
        sink.flush(timeout=10)                # raises DeliveryFailed unless every send is acknowledged

Auto-commit is off: the loop commits at checkpoints, after the effects are acknowledged. The
producer is idempotent with acks=all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from detector.config import KafkaConfig
from detector.exceptions import KafkaUnavailable
from detector.kafka.base import (
    METADATA_MAX_AGE_MS,
    REQUEST_TIMEOUT_MS,
    RESTORE_TIMEOUT_S,
    Callback,
    DeliveryFailed,
    Partition,
    Record,
    all_acked,
    check_flushed,
    isolation,
    paused_past_session,
)

if TYPE_CHECKING:
    from detector.kafka.kafka_python_txn import KafkaTransactionalSink

log = logging.getLogger(__name__)


def client_options(cfg: KafkaConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "bootstrap_servers": cfg.bootstrap_servers.split(","),
        "security_protocol": cfg.security_protocol,
        "client_id": f"detector-{cfg.group_id}",
    }
    if cfg.sasl_mechanism:
        opts["sasl_mechanism"] = cfg.sasl_mechanism
        opts["sasl_plain_username"] = cfg.sasl_username
        opts["sasl_plain_password"] = cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
    if cfg.ssl_cafile:
        opts["ssl_cafile"] = str(cfg.ssl_cafile)
    if cfg.ssl_certfile:
        opts["ssl_certfile"] = str(cfg.ssl_certfile)
    if cfg.ssl_keyfile:
        opts["ssl_keyfile"] = str(cfg.ssl_keyfile)
    return opts


def _partition_count(cfg: KafkaConfig, topic: str) -> int:
    """Partitions of an existing topic (0 if it does not exist)."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        c = KafkaConsumer(request_timeout_ms=max(REQUEST_TIMEOUT_MS, 30_000), **client_options(cfg))
        try:
            return len(c.partitions_for_topic(topic) or ())
        finally:
            c.close()
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot read the metadata of {topic} at {cfg.bootstrap_servers}: {exc}") from None


def _ensure_topics(
    cfg: KafkaConfig, topics: Iterable[str], compacted: Iterable[str], partitions: int | None
) -> list[str]:
    """Create the missing topics (partitions and replication from config); returns those created."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    compact = set(compacted)
    try:
        admin = KafkaAdminClient(request_timeout_ms=REQUEST_TIMEOUT_MS, **client_options(cfg))
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {cfg.bootstrap_servers}: {exc}") from None
    try:
        return _create_missing(admin, cfg, topics, compact, partitions)
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot create topics at {cfg.bootstrap_servers}: {exc}") from None
    finally:
        admin.close()


def _create_missing(
    admin: Any, cfg: KafkaConfig, topics: Iterable[str], compact: set[str], partitions: int | None
) -> list[str]:
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    existing = set(admin.list_topics())
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    new = [
        NewTopic(
            t,
            partitions or cfg.partitions,
            cfg.replication_factor,
            topic_configs={"cleanup.policy": "compact"} if t in compact else {},
        )
        for t in wanted
    ]
    if new:
        try:
            admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass  # another instance of the group created it first
        log.info("created topics %s", wanted)
    return wanted


# How long startup waits for the input topic's partitions to be known before joining the group.
TOPIC_WAIT_S = 30.0
# A client closed outside the loop's shutdown deadline (a `with` block) waits at most this long.
CLOSE_TIMEOUT_S = 5.0


class KafkaSource:
    def __init__(
        self,
        cfg: KafkaConfig,
        on_assign: Callback | None = None,
        on_revoke: Callback | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        self.cfg = cfg
        self.on_assign, self.on_revoke = on_assign, on_revoke
        # Partitions lost (the member was evicted: its session expired): not revoked, so nothing
        # may be committed for them. None: on_revoke is called instead.
        self.on_lost: Callback | None = None
        self.polled_at = time.monotonic()  # when the last poll returned
        self.topics = list(topics) or [cfg.input_topic]
        self._consumer: Any = None

    def __enter__(self) -> KafkaSource:
        from kafka import ConsumerRebalanceListener, KafkaConsumer
        from kafka.coordinator.assignors.range import RangePartitionAssignor

        source = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                if source.on_revoke:
                    source.on_revoke([(tp.topic, tp.partition) for tp in revoked])

            def on_partitions_lost(self, lost: Any) -> None:
                callback = source.on_lost or source.on_revoke
                if callback:
                    callback([(tp.topic, tp.partition) for tp in lost])

            def on_partitions_assigned(self, assigned: Any) -> None:
                if source.on_assign:
                    source.on_assign([(tp.topic, tp.partition) for tp in assigned])

        self._consumer = KafkaConsumer(
            group_id=self.cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.cfg.max_poll_records,
            session_timeout_ms=self.cfg.session_timeout_ms,
            request_timeout_ms=max(REQUEST_TIMEOUT_MS, 30_000),
            # 50 ms: the broker answers at once when data is waiting; an idle fetch waits this long,
            # which bounds the added latency for sparse traffic.
            fetch_max_wait_ms=50,
            # 10 s, not the default 5 min: partitions added to the input topic, or a topic that did
            # not exist at startup, are noticed (and rebalanced to) within seconds. Not enough on its
            # own for a group formed without the topic's metadata: see _await_topic_metadata.
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            # Range: partition p of every subscribed topic goes to the same member, so co-partitioned
            # topics (the input and the verdicts) stay together (see Client.source).
            partition_assignment_strategy=(RangePartitionAssignor,),
            # Topics are created by the daemon (kafka.create_topics) or by their owners, never by a
            # subscription: the broker's auto-creation ignores co-partitioning (as confluent's default).
            allow_auto_create_topics=False,
            isolation_level=isolation(self.cfg),
            **client_options(self.cfg),
        )
        # kafka-python 3.0.12 accepts allow_auto_create_topics but builds the metadata that sends
        # the requests without it (its ClusterMetadata never sees it): set it where they read it.
        cluster_cfg = getattr(getattr(self._consumer, "_cluster", None), "config", None)
        if isinstance(cluster_cfg, dict):
            cluster_cfg["allow_auto_create_topics"] = False
        self._consumer.subscribe(self.topics, listener=Listener())
        self._await_topic_metadata()
        return self

    def _await_topic_metadata(self) -> None:
        """Know the subscribed topics' partitions before the first poll joins the group.

        A group whose leader joined without the input's partitions (a topic created a moment
        before, leaders still being elected) assigned nothing, and kafka-python never rebalanced
        afterwards: two CI runs waited minutes with no partitions. And the metadata must be
        fetched after subscribing: the coordinator snapshots the subscribed topics' partitions on
        each metadata update, and a group joined before any update since the subscription keeps
        an empty snapshot, which the next update contradicts: one needless rebalance right after
        the first assignment (readiness flipped to 503 for a moment; seen in CI). A topic that
        does not exist yet is waited for up to the deadline, then joined all the same."""
        from kafka.errors import KafkaError

        deadline = time.monotonic() + TOPIC_WAIT_S
        while True:
            try:
                self._consumer.topics()  # a metadata request, whatever the cache holds
                if self._consumer.partitions_for_topic(self.cfg.input_topic):
                    return
            except KafkaError as exc:
                raise KafkaUnavailable(f"cannot read the metadata of {self.cfg.input_topic}: {exc}") from None
            if time.monotonic() >= deadline:
                log.warning("input topic %s has no partitions yet: joining the group anyway", self.cfg.input_topic)
                return
            time.sleep(0.2)  # startup only, bounded by the deadline; each try is a metadata request

    def poll(self) -> list[Record]:
        from kafka.errors import KafkaError

        try:
            batches = self._consumer.poll(timeout_ms=self.cfg.poll_timeout_ms, max_records=self.cfg.max_poll_records)
        except KafkaError as exc:  # e.g. the coordinator unreachable: the session retries, the process lives
            raise KafkaUnavailable(f"poll failed: {exc}") from None
        self.polled_at = time.monotonic()
        out: list[Record] = []
        for tp, msgs in batches.items():
            for m in msgs:
                out.append(Record(tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp))
        return out

    def commit(self, next_offsets: dict[Partition, int], blocking: bool = True) -> None:
        """Commit; blocking raises if the broker refuses. Non-blocking is for rebalance callbacks."""
        from kafka.structs import OffsetAndMetadata, TopicPartition

        if not next_offsets:
            return
        from kafka.errors import KafkaError

        offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in next_offsets.items()}
        try:
            if blocking:
                self._consumer.commit(offsets)
            else:
                self._consumer.commit_async(offsets)
        except KafkaError as exc:
            raise KafkaUnavailable(f"offset commit failed: {exc}") from None

    def group_metadata(self) -> Any:
        return self._consumer.group_metadata()

    def membership_lost(self) -> str | None:
        """Why this member may no longer be in the group (None: it is, as far as it knows)."""
        meta = self._consumer.group_metadata()
        if meta.generation_id < 0 or not meta.member_id:
            return "the consumer has no group generation (evicted, or rejoining)"
        return paused_past_session(self.polled_at, self.cfg.session_timeout_ms)

    def lag(self) -> dict[int, int]:
        """Messages behind the log end per assigned partition, from the last fetch's high water.
        A metric only: empty when the client cannot tell (broker away), never an error."""
        from kafka.errors import KafkaError

        out: dict[int, int] = {}
        try:
            for tp in self._consumer.assignment():
                hw = self._consumer.highwater(tp)
                if hw is not None:
                    out[tp.partition] = max(hw - self._consumer.position(tp, timeout_ms=100), 0)
        except KafkaError:
            return {}
        return out

    def pause(self, paused: bool) -> None:
        """Stop (or restart) fetching every assigned partition; poll() keeps the group membership."""
        tps = list(self._consumer.assignment())
        if tps:
            (self._consumer.pause if paused else self._consumer.resume)(*tps)

    def close(self, timeout: float) -> None:
        """Leave the group within `timeout` seconds, committing nothing (the loop did, or must not)."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.close(autocommit=False, timeout_ms=max(int(timeout * 1000), 1))

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close(CLOSE_TIMEOUT_S)


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

    def close(self, timeout: float) -> None:
        """Send what is queued for up to `timeout` seconds, then drop the rest and the connection."""
        if self._producer is not None:
            from kafka.errors import KafkaError

            producer, self._producer = self._producer, None
            try:
                producer.close(timeout=max(timeout, 0.001))
            except KafkaError as exc:  # broker away: what was not acknowledged was not committed either
                log.warning("producer closed with messages unacknowledged (they were not committed): %s", exc)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close(CLOSE_TIMEOUT_S)


def _read(
    cfg: KafkaConfig, topic: str, partition: int, start: int | None, end: int | None, timeout_s: float
) -> Iterator[tuple[bytes | None, bytes | None, int]]:
    """(key, value, offset) of `topic`[`partition`] from `start` (default: its beginning) up to
    `end` (default: its end now: the last stable offset with exactly_once, whose reads skip
    aborted transactions), every client call bounded by `timeout_s` in all."""
    from kafka import KafkaConsumer, TopicPartition

    opts: dict[str, Any] = {**client_options(cfg), "client_id": f"detector-reader-{cfg.group_id}"}
    c = KafkaConsumer(
        enable_auto_commit=False,
        isolation_level=isolation(cfg),
        request_timeout_ms=max(REQUEST_TIMEOUT_MS, 30_000),
        max_partition_fetch_bytes=8 << 20,
        **opts,
    )
    try:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        deadline = time.monotonic() + timeout_s

        def left_ms() -> int:  # every client call bounded: without a timeout they may wait forever
            return max(int((deadline - time.monotonic()) * 1000), 1)

        last = c.end_offsets([tp], timeout_ms=left_ms())[tp]
        end = last if end is None else min(end, last)
        if start is None:
            c.seek_to_beginning(tp)
        else:
            c.seek(tp, start)
        while c.position(tp, timeout_ms=left_ms()) < end:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"reading {topic}[{partition}] did not finish in {timeout_s}s")
            for records in c.poll(timeout_ms=200).values():
                for m in records:
                    if m.offset < end:
                        yield m.key, m.value, m.offset
    finally:
        c.close()


def _offsets_at(cfg: KafkaConfig, topic: str, partitions: int, ts_ms: int | None, timeout_s: float) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    opts: dict[str, Any] = {**client_options(cfg), "client_id": f"detector-reader-{cfg.group_id}"}
    c = KafkaConsumer(
        enable_auto_commit=False,
        isolation_level=isolation(cfg),
        request_timeout_ms=max(REQUEST_TIMEOUT_MS, 30_000),
        **opts,
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ms = int(timeout_s * 1000)
        ends = c.end_offsets(tps, timeout_ms=ms)
        if ts_ms is None:
            return {tp.partition: ends[tp] for tp in tps}
        found = c.offsets_for_times({tp: ts_ms for tp in tps}, timeout_ms=ms)
        return {tp.partition: ends[tp] if found.get(tp) is None else found[tp].offset for tp in tps}
    except KafkaError as exc:
        raise KafkaUnavailable(f"looking up the offsets of {topic} at {ts_ms}: {exc}") from None
    finally:
        c.close()


class KafkaPythonClient:
    """detector.kafka.base.Client for kafka-python."""

    def __init__(self, cfg: KafkaConfig) -> None:
        self.cfg = cfg

    def source(
        self, on_assign: Callback | None = None, on_revoke: Callback | None = None, topics: Sequence[str] = ()
    ) -> KafkaSource:
        return KafkaSource(self.cfg, on_assign, on_revoke, topics)

    def sink(self, linger_ms: int = 2, batch_bytes: int = 1 << 20) -> KafkaSink:
        return KafkaSink(self.cfg, linger_ms, batch_bytes)

    def transactional_sink(self, transactional_id: str, timeout_ms: int) -> KafkaTransactionalSink:
        from detector.kafka.kafka_python_txn import KafkaTransactionalSink

        return KafkaTransactionalSink(self.cfg, transactional_id, timeout_ms)

    def admin(self) -> KafkaPythonClient:
        return self

    def partition_count(self, topic: str) -> int:
        return _partition_count(self.cfg, topic)

    def ensure_topics(
        self, topics: Iterable[str], compacted: Iterable[str] = (), partitions: int | None = None
    ) -> list[str]:
        return _ensure_topics(self.cfg, topics, compacted, partitions)

    def read_range(
        self, topic: str, partition: int, start: int | None, end: int | None, timeout_s: float = RESTORE_TIMEOUT_S
    ) -> Iterator[tuple[bytes | None, bytes | None, int]]:
        from kafka.errors import KafkaError

        try:
            yield from _read(self.cfg, topic, partition, start, end, timeout_s)
        except KafkaError as exc:
            raise KafkaUnavailable(f"reading {topic}[{partition}] failed: {exc}") from None

    def offsets_at(self, topic: str, ts_ms: int | None, timeout_s: float = RESTORE_TIMEOUT_S) -> dict[int, int]:
        return _offsets_at(self.cfg, topic, self.admin().partition_count(topic), ts_ms, timeout_s)
