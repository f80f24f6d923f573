"""The session's rebalance bookkeeping, with a scripted source (the clients run the rebalance
callbacks inside their poll; the real ones are in tests/integration)."""

from __future__ import annotations

from collections.abc import Callable
from unittest.mock import Mock

from detector.config import KafkaConfig
from detector.kafka.base import Record
from detector.service.session import Session


class ScriptedSource:
    """Each poll runs its callback first (a rebalance inside the poll), then hands back its records:
    librdkafka may return records fetched before a revoke from the very poll that ran it."""

    def __init__(self) -> None:
        self.script: list[tuple[Callable[[], None], list[Record]]] = []

    def poll(self) -> list[Record]:
        callback, records = self.script.pop(0)
        callback()
        return records


def rec(partition: int, offset: int) -> Record:
    return Record("in", partition, offset, b"k", b"{}", 0)


def test_records_of_a_partition_revoked_in_the_poll_are_left_to_its_new_owner() -> None:
    owner = Mock()
    owner.drop_partitions.return_value = owner.restore.return_value = 0
    s = Session(owner, Mock(), KafkaConfig(input_topic="in"))
    src = ScriptedSource()
    s._source, s._outbox = src, Mock(pump=Mock(return_value=False), blocked=False)  # type: ignore[assignment]
    src.script = [
        (lambda: s._on_assign([("in", 0), ("in", 1)]), [rec(0, 0), rec(1, 0)]),
        (lambda: s._on_revoke([("in", 1)]), [rec(0, 1), rec(1, 1)]),  # p1's record fetched before the revoke
        (lambda: s._on_lost([("in", 0)]), [rec(0, 2)]),
        (lambda: s._on_assign([("in", 0), ("in", 1)]), [rec(0, 3), rec(1, 5)]),  # both back: read again
    ]
    assert s.poll() == [rec(0, 0), rec(1, 0)]
    assert s.poll() == [rec(0, 1)]
    assert s.poll() == []
    assert s.poll() == [rec(0, 3), rec(1, 5)]
    owner.checkpoint.assert_called_once_with("revoke", blocking=False)  # the revoke checkpointed first
