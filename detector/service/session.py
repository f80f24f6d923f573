"""One connection to Kafka: the clients the loop uses, the rebalance callbacks, backpressure.

    with Session(owner, client, settings.kafka) as s:   # topics checked, clients open
        records = s.poll()          # a batch; rebalances run inside; input paused while Kafka
                                    # rejects alerts (re-sent through a fresh producer)
        s.outbox.send(...); s.io()  # what a checkpoint writes through
        s.readiness()               # (ready, why not) from the parts' states
    # closed: within the shutdown deadline when one is set (`close(deadline)`)

The alerts and dead letters go through one producer (behind the outbox), the state changelog
through its own: the broker serves one connection's requests one at a time, so on a shared
producer an alert raised during a checkpoint waited for a state chunk's ~0.5 MB request first.
"""

from __future__ import annotations

import logging
import socket
import time
from types import TracebackType
from typing import Any, Protocol, cast

from detector.config import KafkaConfig
from detector.core.features import dumps
from detector.exceptions import DetectorError, InvalidEvent
from detector.kafka.base import Client, DeliveryFailed, Partition, Record, Sink, Source, TransactionalSink
from detector.logs import RateLimited
from detector.service.checkpointing import STALL_S, Checkpointer, Io
from detector.service.deadline import Deadline
from detector.service.intake import dead_letter_headers
from detector.service.metrics import Metrics
from detector.service.outbox import Outbox

log = logging.getLogger("detector")
# Each client close waits at most this long when no shutdown deadline is running (a session
# ending on a failure): long enough to leave the group cleanly, short enough to resume soon.
CLOSE_S = 5.0
# How long startup waits for the partitions of topics it just created to show in the metadata.
TOPIC_METADATA_S = 10.0
# Sessions after a failure start after 1, 2, 4 ... this many seconds.
MAX_BACKOFF_S = 30.0


class Backoff:
    """The wait before the next session: doubling per failure, from 1 s again after a session
    that ran a while (it was a recovery)."""

    def __init__(self) -> None:
        self.failures, self._started = 0, time.monotonic()

    def started(self) -> None:
        self._started = time.monotonic()

    def failed(self) -> float:
        ran = time.monotonic() - self._started
        self.failures = 1 if ran > 2 * MAX_BACKOFF_S else self.failures + 1
        return min(2.0 ** (self.failures - 1), MAX_BACKOFF_S)


class Owner(Protocol):
    """What a session needs of the daemon: its table, checkpointer and metrics, and two acts."""

    checkpoints: Checkpointer
    metrics: Metrics

    def checkpoint(self, reason: str, blocking: bool = True) -> None: ...
    def drop_partitions(self, partitions: set[int]) -> int: ...
    def restore(self, partitions: list[int]) -> int: ...
    def shutdown_deadline(self) -> Deadline | None: ...


class Session:
    def __init__(self, owner: Owner, client: Client, cfg: KafkaConfig, shadow: bool = False) -> None:
        self.owner, self.client, self.cfg = owner, client, cfg
        self.shadow = shadow  # a challenger publishes to the shadow alerts topic
        self.transactional = cfg.delivery == "exactly_once"
        # Input partitions held, kept by the rebalance callbacks (safe to read from any thread,
        # unlike the client's own assignment()).
        self.assigned: frozenset[Partition] = frozenset()
        # Revoked or lost, and not assigned again since: a poll that ran the callback may still hand
        # back records of these that were fetched before it; their new owner reads them instead.
        self.revoked: set[Partition] = set()
        self.ever_assigned = False
        self.rebalancing = False
        self.failing = False  # closing after a failure: hand partitions over without committing
        self.paused = False  # input paused: Kafka rejects alerts or dead letters for now
        self._callback_error: BaseException | None = None
        self._sink: Sink | None = None
        self._state: Sink | None = None
        self._source: Source | None = None
        self._outbox: Outbox | None = None
        # One line per 10 s at most for bad events: a flood of them must not flood the logs.
        self._dlq_log = RateLimited(log, every=10.0)

    def __enter__(self) -> Session:
        self._prepare_topics()
        try:
            if self.transactional:
                # One transactional producer for everything a checkpoint's transaction holds:
                # alerts, dead letters, shadow alerts and state (checkpointing's _commit_transaction).
                tid = self.cfg.transactional_id or f"detector-{self.cfg.group_id}-{socket.gethostname()}"
                self._sink = self._state = self.client.transactional_sink(
                    tid, self.cfg.transaction_timeout_ms
                ).__enter__()
            else:
                self._sink = self.client.sink().__enter__()
                self._state = self.client.sink().__enter__()
            self._outbox = Outbox(self._sink)
            topics = (self.cfg.input_topic, self.cfg.verdicts_topic)
            source = self.client.source(self._on_assign, self._on_revoke, topics)
            source.on_lost = self._on_lost
            self._source = source.__enter__()
        except BaseException:
            self.close(None)
            raise
        self.owner.metrics.paused.set(0)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is not None:
            self.failing = True  # closing the consumer must not checkpoint unfinished work
        self.close(self.owner.shutdown_deadline())

    def close(self, deadline: Deadline | None) -> None:
        """Close the consumer, then both producers, each within what is left of `deadline`."""
        d = deadline or Deadline(3 * CLOSE_S)
        if self.failing and self.transactional and self._sink is not None:
            cast(TransactionalSink, self._sink).abort(d.left(CLOSE_S))  # what it held was never committed
        for name, c in (("consumer", self._source), ("producer", self._sink), ("state producer", self._state)):
            if c is None or (name == "state producer" and c is self._sink):
                continue
            try:
                c.close(d.left(CLOSE_S))
            except Exception as exc:  # noqa: BLE001 - one client failing to close must not keep the others open
                log.warning("closing the %s: %s", name, exc)
            if deadline is not None and deadline.expired:
                log.error("shutdown: the budget ran out closing the %s; exiting with the rest unclosed", name)
                return
        self._source = self._sink = self._state = None

    @property
    def source(self) -> Source:
        assert self._source is not None
        return self._source

    @property
    def outbox(self) -> Outbox:
        assert self._outbox is not None
        return self._outbox

    def io(self) -> Io:
        assert self._outbox is not None and self._state is not None and self._source is not None
        return Io(self._outbox, self._state, self._source)

    def publish(self, alerts: list[dict[str, Any]], dead: list[tuple[Record, InvalidEvent]]) -> None:
        """Hand a batch's dead letters and alerts to the outbox (sent now, kept until acked)."""
        k, out, m = self.cfg, self.outbox, self.owner.metrics
        for r, exc in dead:
            out.send(k.dead_letter_topic, r.key, r.value, dead_letter_headers(r, exc))
            m.dead_letters.labels(reason=exc.reason).inc()
            self._dlq_log.warning("dead-lettered %d events since the last line; latest: %s", str(exc)[:200])
        for a in alerts:
            out.send(k.alerts_topic, a["stream_id"].encode(), dumps(a))

    def publish_shadow(self, alerts: list[dict[str, Any]]) -> None:
        """A challenger's would-be alerts: through the outbox too, so a checkpoint waits for them."""
        topic, out = self.cfg.shadow_alerts_topic, self.outbox
        for a in alerts:
            out.send(topic, a["stream_id"].encode(), dumps(a))

    def readiness(self) -> tuple[bool, str]:
        if self.rebalancing:
            return False, "rebalancing"
        if not self.assigned:
            return False, "no partitions assigned"
        if self._outbox is not None and self._outbox.blocked:
            return False, f"input paused: {self._outbox.failure}"
        stalled = self.owner.checkpoints.stalled_for()
        if stalled > STALL_S:
            return False, f"Kafka has not acknowledged the checkpoint for {stalled:.0f}s"
        return True, "ready"

    def poll(self) -> list[Record]:
        records = self.source.poll()
        if self._callback_error is not None:
            raise self._callback_error
        if self.revoked and records:
            kept = [r for r in records if (r.topic, r.partition) not in self.revoked]
            if len(kept) < len(records):
                # Scored here, their alerts would commit without their offsets (this member no
                # longer commits for the partition) and the new owner would alert on them again.
                log.info("%d records of revoked partitions left to their new owner", len(records) - len(kept))
            records = kept
        self._backpressure()
        return records

    def _backpressure(self) -> None:
        """Pause the input while Kafka rejects alerts or dead letters; resume once all are acked."""
        box, now, m = self.outbox, time.monotonic(), self.owner.metrics
        if self.transactional:
            box.pump(now)
            if box.blocked:  # the transaction cannot commit: abort it, resume from the last one
                raise DeliveryFailed(f"Kafka rejected a message of the open transaction: {box.failure}")
            return
        if box.pump(now):
            # A producer that saw a fatal error (an idempotent one after a rejected batch) sends
            # nothing more: every re-send goes through a fresh one.
            assert self._sink is not None
            self._sink.close(CLOSE_S)
            self._sink = box.sink = self.client.sink().__enter__()
            before = box.retries
            box.resend(now)
            m.output_retries.inc(box.retries - before)
        if box.blocked:
            self.source.pause(True)  # every time: partitions assigned meanwhile start paused too
        if box.blocked == self.paused:
            return
        self.paused = box.blocked
        m.paused.set(1 if self.paused else 0)
        if self.paused:
            log.error("input paused, nothing committed past the rejected messages, retrying: %s", box.failure)
            return
        self.source.pause(False)
        log.info("every rejected message acknowledged after %d re-sends: input resumed", box.retries)

    def _prepare_topics(self) -> None:
        """Create what is missing; the state and verdicts topics with as many partitions as the input.

        Both must be co-partitioned with the input: range assignment hands partition p of each to
        the member that holds input partition p, so a stream's state and verdicts reach the member
        that scores its events. A verdicts topic left to the broker's auto-creation gets the
        broker's default count, and appearing after the subscription it rebalances the group."""
        k, admin = self.cfg, self.client.admin()
        if k.create_topics:
            admin.ensure_topics(
                [k.input_topic, k.alerts_topic, k.dead_letter_topic] + ([k.shadow_alerts_topic] if self.shadow else [])
            )
            admin.ensure_topics(
                [k.state_topic, k.verdicts_topic],
                compacted=[k.state_topic],
                partitions=admin.partition_count(k.input_topic),
            )

        def counts() -> tuple[int, int, int]:
            c = admin.partition_count
            return c(k.input_topic), c(k.state_topic), c(k.verdicts_topic)

        n_in, n_state, n_verdicts = counts()
        deadline = time.monotonic() + TOPIC_METADATA_S
        while k.create_topics and (n_in == 0 or n_state < n_in or n_verdicts == 0) and time.monotonic() < deadline:
            # Topics created a moment ago: their partitions show in the metadata within a second.
            time.sleep(0.2)  # startup only, bounded by the deadline; each try is a metadata request
            n_in, n_state, n_verdicts = counts()
        if n_state < n_in:
            raise DetectorError(
                f"state topic {k.state_topic} has {n_state} partitions, fewer than the "
                f"{n_in} of {k.input_topic}: it must have at least as many"
            )
        if n_verdicts not in (0, n_in):
            raise DetectorError(
                f"verdicts topic {k.verdicts_topic} has {n_verdicts} partitions, the input topic "
                f"{k.input_topic} {n_in}: they must have as many (kafka.verdicts_topic), or verdicts "
                "reach members that do not hold their streams"
            )
        if n_verdicts == 0:
            log.warning(
                "verdicts topic %s does not exist: create it with %d partitions, as the input has; "
                "until then no verdict is read",
                k.verdicts_topic,
                n_in,
            )

    # -- rebalance callbacks (run inside poll, between batches) ------------------------------
    def _on_revoke(self, partitions: list[Partition]) -> None:
        if not partitions:
            return
        self.owner.metrics.rebalances.inc()
        self.rebalancing = True
        self.revoked |= set(partitions)
        if self.failing:
            self.assigned = self.assigned - set(partitions)
            return
        try:
            # kafka-python runs this callback on its IO thread, where a blocking commit is not
            # allowed: the state is flushed here, the offsets committed asynchronously. Correctness
            # does not hinge on that commit: restored state carries each stream's applied offset.
            # (confluent runs callbacks on the loop's own thread and commits synchronously.)
            self.owner.checkpoint("revoke", blocking=False)
        except BaseException as exc:  # noqa: BLE001 - kafka-python swallows callback errors; re-raised in poll()
            self._callback_error = exc
            return
        self.assigned = self.assigned - set(partitions)
        dropped = self.owner.drop_partitions({p for t, p in partitions if t == self.cfg.input_topic})
        log.info("partitions revoked: %s (checkpointed, %d streams handed over)", sorted(partitions), dropped)

    def _on_lost(self, partitions: list[Partition]) -> None:
        """The member was evicted (its session expired: paused, partitioned): another member owns
        these partitions now and restores them from the last checkpoint. Nothing is checkpointed
        for them (the saved state could overwrite the new owner's). With exactly_once the open
        transaction holds their events' alerts: the session ends and aborts it."""
        if not partitions:
            return
        self.owner.metrics.rebalances.inc()
        self.rebalancing = True
        self.revoked |= set(partitions)
        self.assigned = self.assigned - set(partitions)
        dropped = self.owner.drop_partitions({p for t, p in partitions if t == self.cfg.input_topic})
        log.warning("partitions lost (evicted from the group): %s, %d streams dropped", sorted(partitions), dropped)
        if self.transactional:
            self._callback_error = DeliveryFailed(f"partitions {sorted(partitions)} lost with a transaction open")

    def _on_assign(self, partitions: list[Partition]) -> None:
        self.owner.metrics.rebalances.inc()
        try:
            restored = self.owner.restore(sorted(p for t, p in partitions if t == self.cfg.input_topic))
        except BaseException as exc:  # noqa: BLE001 - see _on_revoke
            self._callback_error = exc
            return
        self.assigned = self.assigned | set(partitions)
        self.revoked -= set(partitions)
        self.ever_assigned = self.ever_assigned or bool(partitions)
        self.rebalancing = False
        log.info("partitions assigned: %s (%d streams restored)", sorted(partitions), restored)
