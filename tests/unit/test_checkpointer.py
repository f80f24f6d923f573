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
