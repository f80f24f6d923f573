"""Durable state: the one home of the checkpoint order and of the restore. What makes delivery
at-least-once. The record format itself is `detector.core.record`.

    cp = Checkpointer(state_topic, metrics)
    models = [Held(table, version), Held(shadow_table, shadow_version, SHADOW)]  # champion first
    n = cp.restore(client, models, partitions, tag, now)   # on assignment
    cp.track(records)                          # after a batch's alerts are handed to the outbox
    done = cp.commit("shutdown", io, models, tag, deadline)   # all at once (revoke, reload, stop)
    if cp.due(interval): done = cp.begin(io, models, tag)     # spread over iterations
    done = cp.advance(io)                      # each iteration while one is in progress

`done` is the offsets committed (None while an incremental checkpoint is still in progress).
The order is in `commit`'s docstring; the incremental one keeps it, a chunk of state per loop
iteration.

The changelog holds the champion's record of a stream under the stream id, and a challenger's
(model.shadow_path) under SHADOW + the stream id, each stamped with its model version. A
promotion rewrites the promoted streams under their plain ids and deletes the SHADOW keys
(`drop`); a restart in between restores the champion from the SHADOW keys its version wrote.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

from detector.core import record as ckpt
from detector.core.state import StreamTable
from detector.kafka.base import (
    Client,
    DeliveryFailed,
    Partition,
    Record,
    Sink,
    Source,
    TransactionalSink,
    read_changelog,
)
from detector.service.deadline import Deadline
from detector.service.metrics import Metrics
from detector.service.outbox import Outbox

log = logging.getLogger("detector")
# 30 s for the broker to acknowledge one checkpoint (alerts, dead letters, state: all its steps
# together): well above a healthy broker's milliseconds, below the consumer's max.poll.interval
# (5 min) so a rebalance is not forced. A shutdown gives it less: what is left of its budget.
FLUSH_TIMEOUT_S = 30.0
# An interval checkpoint still unacknowledged after this long makes /readyz report not ready:
# Kafka is slow or away (the checkpoint itself gives up after FLUSH_TIMEOUT_S).
STALL_S = 3.0
# State records sent per loop iteration by an incremental checkpoint: ~15 ms of producer work,
# so the loop never stalls for the whole snapshot (10k streams ~ 17 MB).
CHECKPOINT_CHUNK = 500

Records = list[tuple[bytes, bytes | None, int]]  # (stream id, state record or tombstone, partition)
# The changelog key prefix of a challenger's records (no stream id starts with a NUL byte).
SHADOW = b"\x00shadow\x00"


@dataclass
class Held:
    """A model's per-stream state as the changelog holds it: its table, version and key prefix."""

    table: StreamTable
    version: str
    prefix: bytes = b""


@dataclass
class Io:
    """One Kafka session's ends: the alerts' outbox (its sink is their producer), the changelog's
    own producer, and the consumer whose offsets are committed."""

    outbox: Outbox
    state: Sink
    source: Source


@dataclass
class _Incremental:
    """A checkpoint spread over loop iterations: the state snapshot is encoded at once, sent in
    chunks once the alerts it depends on are acknowledged, and its offsets committed last."""

    offsets: dict[Partition, int]
    upto: int  # the outbox's sequence number of the last alert or dead letter it depends on
    records: Records
    started: float
    sent: list[Any] = field(default_factory=list)
    chunk: list[Any] = field(default_factory=list)  # the futures of the last chunk sent
    cursor: int = 0
    sending_since: float | None = None
    warned: bool = False  # the stall was logged


class Checkpointer:
    def __init__(self, state_topic: str, metrics: Metrics, transactional: bool = False) -> None:
        self.state_topic, self.metrics = state_topic, metrics
        # kafka.delivery exactly_once: each checkpoint is one transaction (`_commit_transaction`).
        self.transactional = transactional
        self.drops: list[tuple[Held, Held | None]] = []  # (state to delete, state to keep): see `drop`
        self.pending: dict[Partition, int] = {}  # next offset per partition, not yet committed
        self.incremental: _Incremental | None = None
        self.last_at = time.monotonic()

    def restore(self, client: Client, models: list[Held], partitions: list[int], tag: int, now: float) -> int:
        """Load the latest state of every stream of these input partitions from the changelog
        (changelog partition p holds input partition p's streams) into the champion (models[0])
        and the challenger (models[1], if any); returns the champion's streams restored."""
        t0 = time.monotonic()
        champion, shadow = models[0], (models[1] if len(models) > 1 else None)
        n, stale = 0, 0
        promoted: set[str] = set()  # champion streams restored from a SHADOW key (see the module doc)
        for p in partitions:
            for key, value in read_changelog(client, self.state_topic, p):
                if key.startswith(_SHADOW_TEXT):
                    sid = key[len(_SHADOW_TEXT) :]
                    version = None if value is None else ckpt.version_of(value)
                    if shadow is not None and (value is None or version == shadow.version):
                        stale += not _restore_one(shadow.table, sid, p, value, shadow.version, tag, now)
                    elif value is not None and version == champion.version and sid not in champion.table.index:
                        if _restore_one(champion.table, sid, p, value, champion.version, tag, now):
                            promoted.add(sid)
                            n += 1
                    continue
                if value is not None and key in promoted and ckpt.version_of(value) != champion.version:
                    continue  # the old champion's record of a stream promoted with its state
                ok = _restore_one(champion.table, key, p, value, champion.version, tag, now)
                promoted.discard(key)
                n += ok and value is not None
                stale += not ok
        for m in models:
            m.table.evicted.clear()  # evictions during a restore concern streams never written since
        if stale:
            log.warning("ignored %d changelog records written by another model version or input topic", stale)
        log.info("restored %d streams of partitions %s in %.2fs", n, partitions, time.monotonic() - t0)
        return n

    def stalled_for(self) -> float:
        """Seconds an interval checkpoint has been waiting for Kafka (0 when none is)."""
        return 0.0 if self.incremental is None else time.monotonic() - self.incremental.started

    def track(self, records: list[Record]) -> None:
        """Offsets of a processed batch: committed by the next checkpoint. A partition's records
        arrive in offset order, so its last one in the batch holds its highest offset (0.12 us a
        record, against 0.45 for a max() per record)."""
        pending = self.pending
        last = {(r.topic, r.partition): r.offset for r in records}
        for key, offset in last.items():
            if offset + 1 > pending.get(key, 0):
                pending[key] = offset + 1

    def reset(self) -> None:
        """After a failed session: nothing pending survives (the changelog has the truth)."""
        self.pending, self.incremental, self.drops = {}, None, []

    def drop(self, held: Held, keep: Held | None = None) -> None:
        """Delete every stream of `held` (a table no longer served: the old champion, a replaced
        challenger, the SHADOW keys of a promoted one) from the changelog at the next checkpoint,
        after its other records, except the streams `keep` (under the same keys) saves then."""
        self.drops.append((held, keep))

    def due(self, interval: float) -> bool:
        return self.incremental is None and bool(self.pending) and time.monotonic() - self.last_at >= interval

    def commit(
        self,
        reason: str,
        io: Io,
        models: list[Held],
        tag: int,
        deadline: Deadline | None = None,
        blocking: bool = True,
    ) -> dict[Partition, int]:
        """Make everything up to the last processed event durable, in this order:

        1. flush the alerts' producer: every alert and dead letter sent so far is acknowledged,
           or DeliveryFailed is raised and nothing below happens;
        2. produce the state of every stream changed since the last checkpoint to the changelog
           (partition = the stream's input partition) through the state's own producer, a
           tombstone for each evicted stream, and flush that one (acks=all, both);
        3. commit the input offsets of every event processed so far.
        All steps share one `deadline` (FLUSH_TIMEOUT_S from now when none is given): a flush
        waits only what is left of it, and running out raises naming the step.
        Step 1 comes first so that durable state never runs ahead of its alerts: a saved state
        implies the alerts of every event it holds were acknowledged. A crash before step 2
        completes re-scores from the previous commit with the previous state; a crash between 2
        and 3 skips the events the saved state already holds (each stream's applied offset).
        """
        d = deadline or Deadline(FLUSH_TIMEOUT_S, DeliveryFailed)
        if self.transactional:
            return self._commit_transaction(reason, io, models, tag, d)
        t0 = time.perf_counter()
        box, state, topic = io.outbox, io.state, self.state_topic
        try:
            self._flush(box.sink, d, f"checkpoint ({reason}): flushing {len(box)} alerts and dead letters")
            box.pump(time.monotonic())
            if not box.acked_upto(box.seq):
                d.check(f"checkpoint ({reason}): flushing {len(box)} alerts and dead letters")
                why = box.failure or "timed out"
                raise DeliveryFailed(f"{len(box)} alerts or dead letters not acknowledged: {why}")
            if self.incremental is not None:  # finish it first: its offsets come before ours
                inc, self.incremental = self.incremental, None
                for key, value, part in inc.records[inc.cursor :]:
                    state.send(topic, key, value, partition=part)
                self._flush(state, d, f"checkpoint ({reason}): flushing the state changelog")
                state.all_acked(inc.sent)
                self.pending = {k: max(v, self.pending.get(k, 0)) for k, v in {**inc.offsets, **self.pending}.items()}
            for key, value, part in self._state_records(models, tag):
                state.send(topic, key, value, partition=part)
            self._flush(state, d, f"checkpoint ({reason}): flushing the state changelog")
            d.check(f"checkpoint ({reason}): before committing offsets")
            io.source.commit(self.pending, blocking)
        except Exception:
            self.metrics.checkpoint_failures.inc()
            raise
        done, self.pending = self.pending, {}
        self.last_at = time.monotonic()
        self.metrics.checkpoint_duration.observe(time.perf_counter() - t0)
        return done

    def _commit_transaction(
        self, reason: str, io: Io, models: list[Held], tag: int, d: Deadline
    ) -> dict[Partition, int]:
        """exactly_once: one transaction holds the alerts, dead letters and shadow alerts sent
        since the last checkpoint (they went out on the same transactional producer), the state
        of every stream changed since (and the tombstones), and the consumed offsets with the
        group's metadata. It commits as a whole or not at all: a failure aborts it, and the session
        resumes from the last committed one. A zombie (its group generation gone) is refused here."""
        t0 = time.perf_counter()
        box, sink = io.outbox, cast(TransactionalSink, io.state)
        opened = sink.opened_at
        try:
            box.pump(time.monotonic())
            if box.blocked:
                raise DeliveryFailed(f"checkpoint ({reason}): {box.failure}")
            lost = io.source.membership_lost()
            if lost is not None:  # a zombie: whatever it would commit, the group's new owner redoes
                raise DeliveryFailed(f"checkpoint ({reason}): not committing, {lost}")
            for key, value, part in self._state_records(models, tag):
                sink.send(self.state_topic, key, value, partition=part)
            d.check(f"checkpoint ({reason}): before committing the transaction")
            sink.commit(self.pending, io.source, d.left(FLUSH_TIMEOUT_S))
            box.pump(time.monotonic())  # every message of the transaction is acknowledged with it
        except Exception:
            self.metrics.checkpoint_failures.inc()
            self.metrics.transactions.labels(result="aborted").inc()
            raise
        done, self.pending = self.pending, {}
        self.last_at = time.monotonic()
        self.metrics.transactions.labels(result="committed").inc()
        self.metrics.checkpoint_duration.observe(time.perf_counter() - t0)
        if opened is not None:
            self.metrics.transaction_duration.observe(self.last_at - opened)
        return done

    @staticmethod
    def _flush(sink: Sink, d: Deadline, step: str) -> None:
        """Flush within what is left of `d`; a flush cut short by it raises naming `step`."""
        try:
            sink.flush(d.left(FLUSH_TIMEOUT_S))
        except DeliveryFailed:
            d.check(step)
            raise

    def step(self, io: Io, models: list[Held], tag: int, interval: float, now: float) -> dict[Partition, int] | None:
        """Each loop iteration: the next step of the interval checkpoint in progress, or a new one
        when `interval` seconds have passed (idle streams expired first); the offsets committed."""
        if self.incremental is not None:
            return self.advance(io)
        if self.due(interval):
            for m in models:
                m.table.expire(now)
            if self.transactional:  # a transaction is committed whole: never spread over iterations
                return self.commit("interval", io, models, tag)
            return self.begin(io, models, tag)
        return None

    def begin(self, io: Io, models: list[Held], tag: int) -> dict[Partition, int] | None:
        """Start an interval checkpoint without stalling the loop (same order as `commit`)."""
        records = self._state_records(models, tag)
        self.incremental = _Incremental(self.pending, io.outbox.seq, records, time.monotonic())
        self.pending = {}
        return self.advance(io)

    def advance(self, io: Io) -> dict[Partition, int] | None:
        """One step: wait for the alerts (non-blocking), send a chunk of state, commit when acked."""
        inc, state = self.incremental, io.state
        assert inc is not None
        try:
            now = time.monotonic()
            waited = now - inc.started
            if inc.sending_since is not None and now - inc.sending_since > FLUSH_TIMEOUT_S:
                raise DeliveryFailed(f"checkpoint not acknowledged within {FLUSH_TIMEOUT_S:.0f}s")
            if waited > STALL_S and not inc.warned:
                inc.warned = True
                log.warning("Kafka has not acknowledged the checkpoint for %.0fs: not ready until it does", waited)
            # Alerts that Kafka rejects are re-sent by the outbox (input paused meanwhile): wait for them.
            if not io.outbox.acked_upto(inc.upto):
                return None
            if inc.sending_since is None:
                inc.sending_since = now
            if inc.cursor < len(inc.records):
                # One chunk in flight at a time: the loop's share of the producer work is paced,
                # and the broker takes the snapshot in steps, not at once.
                if inc.chunk and not state.all_acked(inc.chunk):
                    return None
                end = min(inc.cursor + CHECKPOINT_CHUNK, len(inc.records))
                for key, value, part in inc.records[inc.cursor : end]:
                    state.send(self.state_topic, key, value, partition=part)
                inc.cursor = end
                inc.chunk = state.take_pending()
                inc.sent += inc.chunk
            if inc.cursor < len(inc.records) or not state.all_acked(inc.sent):
                return None
            io.source.commit(inc.offsets)
        except Exception:
            self.metrics.checkpoint_failures.inc()
            raise
        self.incremental = None
        self.last_at = time.monotonic()
        self.metrics.checkpoint_duration.observe(self.last_at - inc.started)
        return inc.offsets

    def _state_records(self, models: list[Held], tag: int) -> Records:
        """(key, state record, partition) of every stream changed since the last checkpoint, in
        every model held, a tombstone for each evicted one (the evictions are then forgotten), and
        the drops asked for."""
        records: Records = []
        for m in models:
            t = m.table
            ids, slots, parts = t.take_dirty()
            values = ckpt.encode_many(t, slots, m.version, tag)
            records += [(m.prefix + sid.encode(), v, p) for sid, v, p in zip(ids, values, parts, strict=True)]
            records += [(m.prefix + sid.encode(), None, part) for sid, part in t.evicted]
            t.evicted.clear()
        for gone, keep in self.drops:  # last: a stream's new record is written before its old one goes
            kept = {} if keep is None else keep.table.index
            records += [
                (gone.prefix + sid.encode(), None, int(gone.table.partition[slot]))
                for sid, slot in gone.table.index.items()
                if sid not in kept
            ]
        self.drops = []
        return records


_SHADOW_TEXT = SHADOW.decode()


def _restore_one(
    table: StreamTable, sid: str, partition: int, value: bytes | None, version: str, tag: int, now: float
) -> bool:
    """Restore one record into `table` (a tombstone removes the stream); False when it belongs to
    another model or input topic (the stream then starts cold)."""
    if value is None:
        table.remove(sid)
        return True
    slot = table.slot_for_restore(sid, partition, now)
    if ckpt.decode_into(table, slot, value, version, tag):
        return True
    table.remove(sid)
    return False
