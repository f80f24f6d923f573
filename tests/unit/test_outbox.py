"""The outbox keeps alerts and dead letters until acknowledged, and re-sends rejected ones
(unit tests with a fake sink: the real broker case is tests/integration/test_faults.py)."""

from __future__ import annotations

from typing import Any

from detector.kafka.base import DeliveryFailed
from detector.service.outbox import Outbox


class Future:
    def __init__(self, error: str | None, done: bool = True) -> None:
        self.is_done, self.exception = done, error

    def failed(self) -> bool:
        return self.exception is not None


class FlakySink:
    """Rejects every send while `broken`; futures complete at once unless `hold`."""

    def __init__(self) -> None:
        self.broken = False
        self.raise_on_send = False
        self.hold = False
        self.sends: list[tuple[str, bytes | None]] = []
        self.futures: list[Future] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any, track: bool = True) -> Future:
        assert track is False  # the outbox watches its own futures
        if self.raise_on_send:
            raise DeliveryFailed("no metadata for the topic")
        self.sends.append((topic, value))
        f = Future("MessageSizeTooLarge" if self.broken else None, done=not self.hold)
        self.futures.append(f)
        return f

    def all_acked(self, futures: list[Any]) -> bool:
        return True


def pump(box: Outbox, now: float) -> None:
    if box.pump(now):
        box.resend(now)


def test_acknowledged_messages_leave_and_unblock() -> None:
    sink = FlakySink()
    box = Outbox(sink)
    sink.hold = True
    box.send("alerts", b"k", b"1")
    box.send("alerts", b"k", b"2")
    pump(box, 0.0)
    assert len(box) == 2 and not box.acked_upto(1) and not box.blocked
    sink.futures[0].is_done = True
    pump(box, 0.1)
    assert box.acked_upto(1) and not box.acked_upto(2)
    sink.futures[1].is_done = True
    pump(box, 0.2)
    assert len(box) == 0 and box.acked_upto(box.seq)


def test_rejected_messages_block_and_are_resent_with_backoff_until_acknowledged() -> None:
    sink = FlakySink()
    box = Outbox(sink)
    sink.broken = True
    box.send("alerts", b"a", b"1")
    box.send("events.dlq", b"b", b"2")
    pump(box, 10.0)
    assert box.blocked and "2 messages to alerts rejected: MessageSizeTooLarge" in (box.failure or "")
    assert len(sink.sends) == 2
    pump(box, 10.5)  # before the first backoff (1 s) ends: nothing re-sent
    assert len(sink.sends) == 2 and box.retries == 0
    pump(box, 11.0)
    assert len(sink.sends) == 4 and box.retries == 2 and box.blocked
    pump(box, 12.0)  # the next backoff is 2 s
    assert len(sink.sends) == 4
    sink.broken = False
    pump(box, 13.0)
    assert len(sink.sends) == 6 and box.retries == 4
    pump(box, 13.1)
    assert not box.blocked and len(box) == 0 and box.acked_upto(box.seq)
    # Every message reached Kafka, in its original order, none dropped.
    assert [v for _, v in sink.sends[-2:]] == [b"1", b"2"]


def test_a_send_that_raises_is_kept_and_retried() -> None:
    sink = FlakySink()
    box = Outbox(sink)
    sink.raise_on_send = True
    box.send("alerts", b"a", b"1")
    pump(box, 0.0)
    assert box.blocked and "no metadata" in (box.failure or "") and not box.acked_upto(1)
    sink.raise_on_send = False
    pump(box, 1.0)
    pump(box, 1.1)
    assert not box.blocked and box.acked_upto(1) and sink.sends == [("alerts", b"1")]


def test_backoff_is_capped_at_30_seconds() -> None:
    sink = FlakySink()
    box = Outbox(sink)
    sink.broken = True
    box.send("alerts", b"a", b"1")
    now = 0.0
    pump(box, now)
    gaps = []
    last = len(sink.sends)
    for _ in range(4000):
        now += 0.1
        pump(box, now)
        if len(sink.sends) != last:
            gaps.append(now)
            last = len(sink.sends)
    steps = [round(b - a) for a, b in zip(gaps, gaps[1:], strict=False)]
    assert steps[:5] == [2, 4, 8, 16, 30] and set(steps[5:]) == {30}
