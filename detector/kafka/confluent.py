"""confluent-kafka (librdkafka): the same source, sink, admin and changelog reader as the
kafka-python client (detector.kafka.base.Client), about an order of magnitude faster per event.
`kafka.client: confluent`.

    with ConfluentClient(cfg).source(on_assign=f, on_revoke=g) as src:
        records = src.poll()                # consume() in batches, at most max_poll_records
        src.commit({("events", 0): 1234})

librdkafka runs rebalance callbacks inside poll/consume on the caller's thread, so a checkpoint
in the revoke callback may block; commits are always synchronous here.
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
from detector.logs import RateLimited

if TYPE_CHECKING:
    from detector.kafka.confluent_txn import ConfluentTransactionalSink

log = logging.getLogger(__name__)
_errors = RateLimited(log, every=10.0)
# A full local queue (broker down or slow): wait this long for room before giving up on a send.
QUEUE_FULL_TIMEOUT_S = 30.0
# After the first event of an idle spell, gather what arrives in the next 5 ms into the same batch:
# at moderate rates this turns one-event batches (per-batch costs paid per event) into tens of
# events, for at most 5 ms of added latency.
BATCH_LINGER_S = 0.005
# A client closed outside the loop's shutdown deadline (a `with` block) waits at most this long.
CLOSE_TIMEOUT_S = 5.0


def confluent_options(cfg: KafkaConfig, client_id: str | None = None) -> dict[str, Any]:
    """The one `kafka` config section in librdkafka's option names."""
    opts: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap_servers,
        "security.protocol": cfg.security_protocol,
        "client.id": client_id or f"detector-{cfg.group_id}",
        "socket.timeout.ms": max(REQUEST_TIMEOUT_MS, 30_000),
        "error_cb": _on_error,
    }
    if cfg.sasl_mechanism:
        opts["sasl.mechanism"] = cfg.sasl_mechanism
        opts["sasl.username"] = cfg.sasl_username
        opts["sasl.password"] = cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
    if cfg.ssl_cafile:
        opts["ssl.ca.location"] = str(cfg.ssl_cafile)
    if cfg.ssl_certfile:
        opts["ssl.certificate.location"] = str(cfg.ssl_certfile)
    if cfg.ssl_keyfile:
        opts["ssl.key.location"] = str(cfg.ssl_keyfile)
    return opts


def _on_error(err: Any) -> None:
    """librdkafka's client-level errors (broker down, authentication): logged, rate-limited."""
    if err.fatal():
        log.error("kafka client fatal error: %s", err)
    else:
        _errors.warning("kafka client errors (%d since the last line); latest: %s", str(err))


class ConfluentSource:
    def __init__(
        self,
        cfg: KafkaConfig,
        on_assign: Callback | None = None,
        on_revoke: Callback | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        self.cfg = cfg
        self.on_assign, self.on_revoke = on_assign, on_revoke
        self.on_lost: Callback | None = None  # as KafkaSource.on_lost
        self.polled_at = time.monotonic()  # when the last poll returned
        self.topics = list(topics) or [cfg.input_topic]
        self._consumer: Any = None

    def __enter__(self) -> ConfluentSource:
        from confluent_kafka import Consumer

        self._consumer = Consumer(
            {
                **confluent_options(self.cfg),
                "group.id": self.cfg.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": self.cfg.session_timeout_ms,
                # 50 ms, as for kafka-python: bounds the added latency of sparse traffic.
                "fetch.wait.max.ms": 50,
                # As for kafka-python: a topic or partitions unknown at the group's first join are
                # picked up within 10 s, not librdkafka's default 5 min.
                "topic.metadata.refresh.interval.ms": METADATA_MAX_AGE_MS,
                # Range: co-partitioned topics stay together (see the kafka-python source).
                "partition.assignment.strategy": "range",
                "isolation.level": isolation(self.cfg),
            }
        )
        self._consumer.subscribe(
            self.topics,
            on_assign=lambda _c, parts: self._forward(self.on_assign, parts),
            on_revoke=lambda _c, parts: self._forward(self.on_revoke, parts),
            on_lost=lambda _c, parts: self._forward(self.on_lost or self.on_revoke, parts),
        )
        return self

    def group_metadata(self) -> Any:
        return self._consumer.consumer_group_metadata()

    def membership_lost(self) -> str | None:
        """Why this member may no longer be in the group (None: it is, as far as it knows)."""
        if not self._consumer.memberid():
            return "the consumer has no group member id (evicted, or rejoining)"
        return paused_past_session(self.polled_at, self.cfg.session_timeout_ms)

    @staticmethod
    def _forward(callback: Callable[[list[Partition]], None] | None, parts: list[Any]) -> None:
        if callback is not None:
            callback([(tp.topic, tp.partition) for tp in parts])

    def poll(self) -> list[Record]:
        """A batch without waiting for it to fill: what is buffered now, else the first arrival
        within poll_timeout_ms plus what follows within BATCH_LINGER_S (consume() alone would wait
        the whole poll timeout for a full batch, adding that wait to every event's latency)."""
        c, n = self._consumer, self.cfg.max_poll_records
        msgs = c.consume(n, 0)
        self.polled_at = time.monotonic()
        if not msgs:
            first = c.poll(self.cfg.poll_timeout_ms / 1000)
            if first is None:
                return []
            msgs = [first, *c.consume(n - 1, BATCH_LINGER_S)] if n > 1 else [first]
        out: list[Record] = []
        append = out.append
        for m in msgs:
            err = m.error()
            if err is not None:
                _errors.warning("consume errors (%d since the last line); latest: %s", str(err))
                continue
            append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1]))
        return out

    def commit(self, next_offsets: dict[Partition, int], blocking: bool = True) -> None:
        """Synchronous always: librdkafka's callbacks run on this thread, so blocking is safe."""
        from confluent_kafka import KafkaException, TopicPartition

        if not next_offsets:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            raise KafkaUnavailable(f"offset commit failed: {exc}") from None

    def lag(self) -> dict[int, int]:
        """Messages behind the high watermark of the last fetch, per assigned partition."""
        from confluent_kafka import KafkaException

        c = self._consumer
        out: dict[int, int] = {}
        try:
            for tp in c.position(c.assignment()):
                hi = c.get_watermark_offsets(tp, cached=True)[1]
                if hi >= 0 and tp.offset >= 0:
                    out[tp.partition] = max(hi - tp.offset, 0)
        except KafkaException:  # a metric only: never an error
            return {}
        return out

    def pause(self, paused: bool) -> None:
        """Stop (or restart) fetching every assigned partition; poll() keeps the group membership."""
        tps = self._consumer.assignment()
        if tps:
            (self._consumer.pause if paused else self._consumer.resume)(tps)

    def close(self, timeout: float) -> None:
        """Leave the group. librdkafka's close takes no timeout; it returns once the group is
        left, which with a reachable broker takes milliseconds (`timeout` is for the interface)."""
        if self._consumer is not None:
            # close() revokes the assignment: the loop already checkpointed (or failed and must
            # not commit), so the callbacks are not forwarded any more.
            self.on_assign = self.on_revoke = self.on_lost = None
            consumer, self._consumer = self._consumer, None
            consumer.close()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close(CLOSE_TIMEOUT_S)


class _Delivery:
    """The future of one produced message, completed by librdkafka's delivery callback."""

    __slots__ = ("exception", "is_done")

    def __init__(self) -> None:
        self.is_done = False
        self.exception: Any = None

    def __call__(self, err: Any, _msg: Any) -> None:
        self.is_done, self.exception = True, err

    def failed(self) -> bool:
        return self.exception is not None


class ConfluentSink:
    def __init__(self, cfg: KafkaConfig, linger_ms: int = 2, batch_bytes: int = 1 << 20) -> None:
        self.cfg = cfg
        self.linger_ms, self.batch_bytes = linger_ms, batch_bytes
        self._producer: Any = None
        self._pending: list[_Delivery] = []

    def __enter__(self) -> ConfluentSink:
        from confluent_kafka import Producer

        self._producer = Producer(
            {
                **confluent_options(self.cfg),
                "acks": "all",
                "enable.idempotence": True,
                # Java's and kafka-python's partitioner (murmur2 of the key), not librdkafka's CRC-32:
                # a stream's events and its verdicts land in the same partition number whichever
                # client produced them (co-partitioned topics, Client.source).
                "partitioner": "murmur2_random",
                "linger.ms": self.linger_ms,
                "batch.size": self.batch_bytes,
            }
        )
        return self

    def _produce(self, topic: str, **kw: Any) -> None:
        deadline = time.monotonic() + QUEUE_FULL_TIMEOUT_S
        from confluent_kafka import KafkaException

        while True:
            try:
                self._producer.produce(topic, **kw)
                return
            except KafkaException as exc:
                raise DeliveryFailed(f"send to {topic} failed: {exc}") from None
            except BufferError:  # the local queue is full: serve deliveries to make room
                if time.monotonic() > deadline:
                    raise DeliveryFailed(f"producer queue full for {QUEUE_FULL_TIMEOUT_S:.0f}s") from None
                self._producer.poll(0.1)

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        track: bool = True,
    ) -> _Delivery:
        d = _Delivery()
        kw: dict[str, Any] = {"key": key, "value": value, "on_delivery": d}
        if headers:
            kw["headers"] = headers
        if partition is not None:
            kw["partition"] = partition
        self._produce(topic, **kw)
        if track:
            self._pending.append(d)
        return d

    def produce(self, topic: str, key: bytes | None, value: bytes, done: Callable[[str | None], None]) -> None:
        """Fire-and-count for bulk sends (replay): `done(None)` on ack, `done(reason)` on failure."""
        self._produce(topic, key=key, value=value, on_delivery=lambda err, _m: done(None if err is None else str(err)))
        self._producer.poll(0)

    def take_pending(self) -> list[Any]:
        pending, self._pending = self._pending, []
        return pending

    def all_acked(self, futures: list[Any]) -> bool:
        self._producer.poll(0)  # serve the delivery callbacks first
        return all_acked(futures)

    def flush(self, timeout: float) -> int:
        pending, self._pending = self._pending, []
        self._producer.flush(timeout)
        return check_flushed(pending)

    def close(self, timeout: float) -> None:
        """Send what is queued for up to `timeout` seconds, then drop the rest and the client."""
        if self._producer is not None:
            self._producer.flush(max(timeout, 0.0))
            # What is still unsent after the flush is dropped (its offsets were never committed, so
            # it is re-sent after a restart), then the client is destroyed now: left to the garbage
            # collector, a producer whose broker has gone kept reconnecting and logging to the
            # process's stderr long after the daemon stopped (seen in a test run's later tests).
            self._producer.purge()
            self._producer.close()
            self._producer = None

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close(CLOSE_TIMEOUT_S)


def _read(
    cfg: KafkaConfig, topic: str, partition: int, start: int | None, end: int | None, timeout_s: float
) -> Iterator[tuple[bytes | None, bytes | None, int]]:
    """(key, value, offset) of `topic`[`partition`] from `start` (default: its beginning) up to
    `end` (default: its end now)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    c = Consumer(
        {
            **confluent_options(cfg, f"detector-reader-{cfg.group_id}"),
            "group.id": f"{cfg.group_id}-reader",  # required by the client; never joined or committed
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "isolation.level": isolation(cfg),
        }
    )
    try:
        try:
            last = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)[1]
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot read {topic}[{partition}]: {exc}") from None
        end = last if end is None else min(end, last)
        first = OFFSET_BEGINNING if start is None else start
        if end <= 0 or (start is not None and start >= end):
            return
        c.assign([TopicPartition(topic, partition, first)])
        deadline, at = time.monotonic() + timeout_s, -1
        while at < end - 1:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"reading {topic}[{partition}] did not finish in {timeout_s}s")
            msgs = c.consume(10_000, 0.2)
            if not msgs and c.position([TopicPartition(topic, partition)])[0].offset >= end:
                break  # the end offset was not a record (a gap): the position tells
            for m in msgs:
                if m.error() is not None:
                    continue
                at = m.offset() or 0
                if at < end:
                    yield m.key(), m.value(), at
    finally:
        c.close()


def _offsets_at(cfg: KafkaConfig, topic: str, partitions: int, ts_ms: int | None, timeout_s: float) -> dict[int, int]:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer(
        {
            **confluent_options(cfg, f"detector-reader-{cfg.group_id}"),
            "group.id": f"{cfg.group_id}-reader",  # required by the client; never joined or committed
            "enable.auto.commit": False,
            "isolation.level": isolation(cfg),
        }
    )
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1] for p in range(partitions)}
        if ts_ms is None:
            return ends
        found = c.offsets_for_times([TopicPartition(topic, p, ts_ms) for p in range(partitions)], timeout=timeout_s)
        return {tp.partition: ends[tp.partition] if tp.offset < 0 else tp.offset for tp in found}
    except KafkaException as exc:
        raise KafkaUnavailable(f"looking up the offsets of {topic} at {ts_ms}: {exc}") from None
    finally:
        c.close()


class ConfluentClient:
    """detector.kafka.base.Client for confluent-kafka; topic admin through its AdminClient."""

    def __init__(self, cfg: KafkaConfig) -> None:
        self.cfg = cfg

    def source(
        self, on_assign: Callback | None = None, on_revoke: Callback | None = None, topics: Sequence[str] = ()
    ) -> ConfluentSource:
        return ConfluentSource(self.cfg, on_assign, on_revoke, topics)

    def sink(self, linger_ms: int = 2, batch_bytes: int = 1 << 20) -> ConfluentSink:
        return ConfluentSink(self.cfg, linger_ms, batch_bytes)

    def transactional_sink(self, transactional_id: str, timeout_ms: int) -> ConfluentTransactionalSink:
        from detector.kafka.confluent_txn import ConfluentTransactionalSink

        return ConfluentTransactionalSink(self.cfg, transactional_id, timeout_ms)

    def admin(self) -> ConfluentClient:
        return self

    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(confluent_options(self.cfg))

    def partition_count(self, topic: str) -> int:
        from confluent_kafka import KafkaException

        try:
            # Every topic's metadata, not the one named: librdkafka's admin client, a producer
            # underneath, asks the broker to auto-create a topic it names (allow.auto.create.topics
            # defaults to true for producers), which would leave it with the broker's default count.
            meta = self._admin().list_topics(timeout=REQUEST_TIMEOUT_MS / 1000)
        except KafkaException as exc:
            where = self.cfg.bootstrap_servers
            raise KafkaUnavailable(f"cannot read the metadata of {topic} at {where}: {exc}") from None
        t = meta.topics.get(topic)
        return 0 if t is None or t.error is not None else len(t.partitions)

    def ensure_topics(
        self, topics: Iterable[str], compacted: Iterable[str] = (), partitions: int | None = None
    ) -> list[str]:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        cfg, compact, admin = self.cfg, set(compacted), self._admin()
        try:
            existing = set(admin.list_topics(timeout=REQUEST_TIMEOUT_MS / 1000).topics)
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot reach Kafka at {cfg.bootstrap_servers}: {exc}") from None
        wanted = [t for t in dict.fromkeys(topics) if t not in existing]
        new = [
            NewTopic(
                t,
                num_partitions=partitions or cfg.partitions,
                replication_factor=cfg.replication_factor,
                config={"cleanup.policy": "compact"} if t in compact else {},
            )
            for t in wanted
        ]
        for topic, fut in (admin.create_topics(new, request_timeout=REQUEST_TIMEOUT_MS / 1000) if new else {}).items():
            try:
                fut.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another instance was first
                    raise KafkaUnavailable(f"cannot create topic {topic} at {cfg.bootstrap_servers}: {exc}") from None
        if wanted:
            log.info("created topics %s", wanted)
        return wanted

    def read_range(
        self, topic: str, partition: int, start: int | None, end: int | None, timeout_s: float = RESTORE_TIMEOUT_S
    ) -> Iterator[tuple[bytes | None, bytes | None, int]]:
        return _read(self.cfg, topic, partition, start, end, timeout_s)

    def offsets_at(self, topic: str, ts_ms: int | None, timeout_s: float = RESTORE_TIMEOUT_S) -> dict[int, int]:
        return _offsets_at(self.cfg, topic, self.admin().partition_count(topic), ts_ms, timeout_s)
