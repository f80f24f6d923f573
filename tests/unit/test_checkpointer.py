"""The checkpoint order (detector.service.checkpointing) against fake Kafka ends that write every
call into one journal: alerts flushed, then state sent and flushed, then offsets committed;
nothing committed after a failed or timed-out step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detector.core.state import StreamTable
from detector.kafka.base import DeliveryFailed, Record, check_flushed
from detector.service.checkpointing import SHADOW, Checkpointer, Held, Io
from detector.service.deadline import Deadline, ShutdownTimeout
from detector.service.metrics import Metrics
from detector.service.outbox import Outbox


class Future:
    def __init__(self) -> None:
        self.is_done, self.exception = False, None

    def failed(self) -> bool:
        return self.exception is not None


class FakeSink:
    """Acknowledges every send at flush, or fails them all (`fail`), or leaves them unacknowledged
    (`hang`: a flush that times out)."""

    def __init__(self, name: str, journal: list[tuple[str, ...]]) -> None:
        self.name, self.journal = name, journal
        self.fail = self.hang = False
        self.futures: list[Future] = []
        self._pending: list[Future] = []

    def send(
        self, topic: str, key: Any, value: Any, headers: Any = None, partition: Any = None, track: bool = True
    ) -> Future:
        f = Future()
        self.futures.append(f)
        if track:
            self._pending.append(f)
        self.journal.append(("send", self.name, topic, key))
        return f

    def _settle(self) -> None:
        for f in self.futures:
            if not f.is_done and not self.hang:
                f.is_done, f.exception = True, ("rejected" if self.fail else None)

    def flush(self, timeout: float) -> int:
        self.journal.append(("flush", self.name))
        self._settle()
        pending, self._pending = self._pending, []
        return check_flushed(pending)

    def take_pending(self) -> list[Future]:
        pending, self._pending = self._pending, []
        return pending

    def all_acked(self, futures: list[Any]) -> bool:
        self._settle()
        from detector.kafka.base import all_acked

        return all_acked(futures)


class FakeSource:
    def __init__(self, journal: list[tuple[str, ...]]) -> None:
        self.journal = journal

    def commit(self, next_offsets: dict[Any, int], blocking: bool = True) -> None:
        self.journal.append(("commit", str(sorted(next_offsets.items()))))


@pytest.fixture
def parts() -> tuple[Checkpointer, Io, StreamTable, list[tuple[str, ...]], FakeSink, FakeSink]:
    journal: list[tuple[str, ...]] = []
    alerts, state = FakeSink("alerts", journal), FakeSink("state", journal)
    io = Io(Outbox(alerts), state, FakeSource(journal))  # type: ignore[arg-type]
    table = StreamTable(max_streams=10, units=4, window=2, n_features=3)
    table.slots_for(["a", "b"], now=0.0, partitions=np.array([0, 1], np.int32))
    cp = Checkpointer("state", Metrics.create(CollectorRegistry()))
    return cp, io, table, journal, alerts, state


def batch(cp: Checkpointer, io: Io) -> None:
    """A processed batch: one alert in the outbox, two records' offsets tracked."""
    io.outbox.send("alerts", b"a", b"{}")
    cp.track([Record("events", 0, 41, b"a", b"{}", 0), Record("events", 1, 7, b"b", b"{}", 0)])


def kinds(journal: list[tuple[str, ...]]) -> list[str]:
    return [" ".join(e[:2]) for e in journal if e[0] != "send" or e[1] == "state"]


def test_commit_flushes_alerts_then_state_then_commits_offsets(parts: Any) -> None:
    cp, io, table, journal, _alerts, _state = parts
    batch(cp, io)
    done = cp.commit("shutdown", io, [Held(table, "v1")], 0)
    assert done == {("events", 0): 42, ("events", 1): 8}
    assert kinds(journal) == [
        "flush alerts",
        "send state",
        "send state",
        "flush state",
        f"commit {sorted(done.items())}",
    ]
    assert not cp.pending and not table.take_dirty()[0]  # nothing left to write


def test_nothing_is_committed_when_the_alerts_are_rejected(parts: Any) -> None:
    cp, io, table, journal, alerts, _state = parts
    batch(cp, io)
    alerts.fail = True
    with pytest.raises(DeliveryFailed):
        cp.commit("shutdown", io, [Held(table, "v1")], 0)
    assert [e for e in journal if e[0] in ("commit",) or e[1] == "state"] == []  # no state, no offsets


def test_nothing_is_committed_when_the_state_is_not_acknowledged(parts: Any) -> None:
    cp, io, table, journal, _alerts, state = parts
    batch(cp, io)
    state.fail = True
    with pytest.raises(DeliveryFailed):
        cp.commit("revoke", io, [Held(table, "v1")], 0)
    assert not [e for e in journal if e[0] == "commit"]


def test_a_shutdown_that_runs_out_of_its_deadline_names_the_step_and_commits_nothing(parts: Any) -> None:
    cp, io, table, journal, alerts, _state = parts
    batch(cp, io)
    alerts.hang = True  # the broker never answers
    clock = iter([0.0, 0.0, 30.0, 30.0, 30.0, 30.0])
    with pytest.raises(ShutdownTimeout, match="flushing 1 alerts and dead letters ran out of the 20s budget"):
        cp.commit("shutdown", io, [Held(table, "v1")], 0, Deadline(20.0, clock=lambda: next(clock)))
    assert not [e for e in journal if e[0] == "commit"]


def test_an_interval_checkpoint_commits_only_after_every_state_chunk_is_acknowledged(parts: Any) -> None:
    cp, io, table, journal, alerts, state = parts
    batch(cp, io)
    state.hang = True
    io.outbox.pump(0.0)  # the loop's backpressure step: the alert is acknowledged
    assert cp.begin(io, [Held(table, "v1")], 0) is None  # state sent, not acknowledged: no commit yet
    assert cp.stalled_for() >= 0 and cp.incremental is not None
    assert not [e for e in journal if e[0] == "commit"]
    batch(cp, io)  # a new batch meanwhile: its offsets wait for the next checkpoint
    state.hang = False
    io.outbox.pump(0.0)
    done = cp.advance(io)
    assert done == {("events", 0): 42, ("events", 1): 8}
    assert [e[0] for e in journal if e[0] == "commit"] == ["commit"]
    assert cp.pending == {("events", 0): 42, ("events", 1): 8} and cp.incremental is None


def test_offsets_only_move_forward(parts: Any) -> None:
    cp, io, _table, _journal, _alerts, _state = parts
    cp.track([Record("events", 0, 50, None, b"", 0)])
    cp.track([Record("events", 0, 10, None, b"", 0)])  # a re-delivered older record
    assert cp.pending == {("events", 0): 51}


# -- a challenger's state beside the champion's, and promotion -----------------------------------
class ChangelogClient:
    """read_range over the state the fake sink was sent: the changelog as Kafka would hold it."""

    def __init__(self, journal_sink: FakeSink, values: list[tuple[bytes, bytes | None, int]]) -> None:
        self.values = values

    def read_range(self, topic: str, partition: int, start: Any, end: Any, timeout_s: float = 0) -> Any:
        return [(k, v, i) for i, (k, v, p) in enumerate(self.values) if p == partition]


class RecordingSink(FakeSink):
    def __init__(self, journal: list[tuple[str, ...]]) -> None:
        super().__init__("state", journal)
        self.records: list[tuple[bytes, bytes | None, int]] = []

    def send(
        self, topic: str, key: Any, value: Any, headers: Any = None, partition: Any = None, track: bool = True
    ) -> Future:
        self.records.append((key, value, partition))
        return super().send(topic, key, value, headers, partition, track)


def tables() -> tuple[StreamTable, StreamTable]:
    made = []
    for bias in (1.0, 2.0):
        t = StreamTable(max_streams=10, units=4, window=2, n_features=3)
        slots = t.slots_for(["a", "b"], now=0.0, partitions=np.array([0, 1], np.int32))
        t.h[slots] = bias
        t.offset[slots] = [5, 9]
        made.append(t)
    return made[0], made[1]


def restored(values: list[tuple[bytes, bytes | None, int]], champion: str, shadow: str | None) -> list[StreamTable]:
    cp = Checkpointer("state", Metrics.create(CollectorRegistry()))
    fresh = [StreamTable(max_streams=10, units=4, window=2, n_features=3) for _ in range(2)]
    models = [Held(fresh[0], champion)] + ([Held(fresh[1], shadow, SHADOW)] if shadow else [])
    cp.restore(ChangelogClient(None, values), models, [0, 1], 0, 0.0)  # type: ignore[arg-type]
    return fresh


def test_champion_and_challenger_state_restore_into_their_own_tables() -> None:
    journal: list[tuple[str, ...]] = []
    sink = RecordingSink(journal)
    io = Io(Outbox(FakeSink("alerts", journal)), sink, FakeSource(journal))  # type: ignore[arg-type]
    champ, rival = tables()
    cp = Checkpointer("state", Metrics.create(CollectorRegistry()))
    cp.commit("shutdown", io, [Held(champ, "v1"), Held(rival, "v2", SHADOW)], 0)
    assert [k for k, _, _ in sink.records] == [b"a", b"b", SHADOW + b"a", SHADOW + b"b"]
    c, r = restored(sink.records, "v1", "v2")
    assert np.all(c.h[[c.index["a"], c.index["b"]]] == 1.0) and np.all(r.h[[r.index["a"], r.index["b"]]] == 2.0)
    assert r.offset[r.index["b"]] == 9
    # Without a challenger configured, its records are left alone; another version's are ignored.
    c, r = restored(sink.records, "v1", None)
    assert len(c) == 2 and len(r) == 0
    c, r = restored(sink.records, "v1", "v3")
    assert len(r) == 0


def test_promotion_writes_the_promoted_state_before_deleting_the_old() -> None:
    journal: list[tuple[str, ...]] = []
    sink = RecordingSink(journal)
    io = Io(Outbox(FakeSink("alerts", journal)), sink, FakeSource(journal))  # type: ignore[arg-type]
    champ, rival = tables()
    champ.slots_for(["gone"], now=0.0, partitions=np.array([0], np.int32))  # only the old champion has it
    cp = Checkpointer("state", Metrics.create(CollectorRegistry()))
    cp.commit("reload", io, [Held(champ, "v1"), Held(rival, "v2", SHADOW)], 0)
    before = list(sink.records)
    # What a crash right after the promotion's files changed restores: the champion from SHADOW keys.
    c, _ = restored(before, "v2", None)
    assert len(c) == 2 and c.h[c.index["a"]][0] == 2.0
    # The promotion's checkpoint: every promoted stream under its own id, then the SHADOW keys and
    # the old champion's other streams deleted.
    rival.dirty[list(rival.index.values())] = True
    cp.drop(Held(rival, "v2", SHADOW))
    cp.drop(Held(champ, "v1"), keep=Held(rival, "v2"))
    cp.commit("promote", io, [Held(rival, "v2")], 0)
    written = sink.records[len(before) :]
    assert [k for k, v, _ in written if v is not None] == [b"a", b"b"]
    assert [k for k, v, _ in written if v is None] == [SHADOW + b"a", SHADOW + b"b", b"gone"]
    c, _ = restored(sink.records, "v2", None)
    assert sorted(c.index) == ["a", "b"] and c.h[c.index["b"]][0] == 2.0 and c.offset[c.index["b"]] == 9
    # Cut short after the new records, before the deletes: still the promoted state.
    c, _ = restored(before + written[:2], "v2", None)
    assert sorted(c.index) == ["a", "b"] and c.h[c.index["a"]][0] == 2.0


# -- exactly_once: one transaction per checkpoint --------------------------------------------------
class FakeTransactionalSink(RecordingSink):
    """Records the transaction's commit (offsets with the group's metadata) or its failure."""

    def __init__(self, journal: list[tuple[str, ...]]) -> None:
        super().__init__(journal)
        self.opened_at: float | None = 0.0
        self.refuse: str | None = None

    def commit(self, offsets: dict[Any, int], source: Any, timeout: float) -> None:
        if self.refuse:
            self.journal.append(("abort", self.refuse))
            raise DeliveryFailed(f"transaction aborted: {self.refuse}")
        self.journal.append(("commit-txn", str(sorted(offsets.items())), source.group_metadata()))


class MemberSource(FakeSource):
    lost: str | None = None

    def group_metadata(self) -> str:
        return "generation 7"

    def membership_lost(self) -> str | None:
        return self.lost


def transactional() -> tuple[Checkpointer, Io, StreamTable, list[tuple[str, ...]], FakeTransactionalSink, MemberSource]:
    journal: list[tuple[str, ...]] = []
    sink, source = FakeTransactionalSink(journal), MemberSource(journal)
    io = Io(Outbox(sink), sink, source)  # type: ignore[arg-type]
    table = StreamTable(max_streams=10, units=4, window=2, n_features=3)
    table.slots_for(["a", "b"], now=0.0, partitions=np.array([0, 1], np.int32))
    return (
        Checkpointer("state", Metrics.create(CollectorRegistry()), transactional=True),
        io,
        table,
        journal,
        sink,
        source,
    )


def test_an_exactly_once_checkpoint_is_one_transaction_with_the_offsets() -> None:
    cp, io, table, journal, sink, _ = transactional()
    batch(cp, io)
    done = cp.commit("interval", io, [Held(table, "v1")], 0)
    assert done == {("events", 0): 42, ("events", 1): 8}
    # The alert, then the state, on the one producer, then one commit carrying the offsets and the
    # group's metadata; no separate consumer commit.
    assert [e[0] + " " + e[2] if e[0] == "send" else e[0] for e in journal] == [
        "send alerts", "send state", "send state", "commit-txn"
    ]  # fmt: skip
    assert journal[-1] == ("commit-txn", str(sorted(done.items())), "generation 7")
    m = cp.metrics.registry.get_sample_value
    assert m("detector_transactions_total", {"result": "committed"}) == 1.0


def test_a_refused_transaction_commits_nothing_and_counts_an_abort() -> None:
    cp, io, table, journal, sink, _ = transactional()
    batch(cp, io)
    sink.refuse = "fenced"
    with pytest.raises(DeliveryFailed, match="fenced"):
        cp.commit("interval", io, [Held(table, "v1")], 0)
    assert cp.pending  # nothing recorded as committed: the session resumes from the last transaction
    assert cp.metrics.registry.get_sample_value("detector_transactions_total", {"result": "aborted"}) == 1.0


def test_a_member_that_lost_the_group_does_not_commit() -> None:
    cp, io, table, journal, sink, source = transactional()
    batch(cp, io)
    source.lost = "12.0s since the last poll, over kafka.session_timeout_ms"
    with pytest.raises(DeliveryFailed, match="not committing, 12.0s since the last poll"):
        cp.commit("interval", io, [Held(table, "v1")], 0)
    assert not [e for e in journal if e[0] == "commit-txn"]


def test_an_exactly_once_interval_checkpoint_is_never_spread_over_iterations() -> None:
    cp, io, table, journal, _, _ = transactional()
    batch(cp, io)
    cp.last_at = -1e9  # due
    assert cp.step(io, [Held(table, "v1")], 0, 1.0, 0.0) == {("events", 0): 42, ("events", 1): 8}
    assert cp.incremental is None
