"""Alerts and dead letters held until Kafka acknowledges them: retried, never dropped.

    box = Outbox(sink)
    box.send("alerts", key, value)        # sent at once; kept until acknowledged
    if box.pump(time.monotonic()):        # drop the acknowledged; True: a re-send of failures is due
        box.resend(time.monotonic())
    box.blocked                           # some were rejected: the loop pauses its input meanwhile
    box.acked_upto(seq)                   # every message up to sequence number `seq` acknowledged

A rejected message (topic deleted or not writable, record too large for it) is not an error
that ends the session: the loop pauses its input partitions while `blocked`, keeps polling (so
the group keeps it), and commits nothing past the unacknowledged messages. Re-sends go out after
1, 2, 4 ... 30 s; once every message is acknowledged the input resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detector.kafka.base import DeliveryFailed

MAX_BACKOFF_S = 30.0


@dataclass(slots=True)
class _Message:
    seq: int
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    future: Any = None  # None: the send itself raised
    error: str = ""


class Outbox:
    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.seq = 0  # sequence number of the last message sent
        self.failure: str | None = None  # why messages were rejected, while any are
        self.retries = 0  # re-sends so far
        self._messages: list[_Message] = []
        self._failed: list[_Message] = []
        self._attempts = 0
        self._retry_at = 0.0

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def blocked(self) -> bool:
        return self.failure is not None

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self.seq += 1
        m = _Message(self.seq, topic, key, value, headers)
        self._send(m)
        self._messages.append(m)

    def _send(self, m: _Message) -> None:
        try:
            m.future, m.error = self.sink.send(m.topic, m.key, m.value, m.headers, track=False), ""
        except DeliveryFailed as exc:
            m.future, m.error = None, str(exc)

    def acked_upto(self, seq: int) -> bool:
        return not self._messages or self._messages[0].seq > seq

    def pump(self, now: float) -> bool:
        """Drop acknowledged messages and note rejected ones; True when a re-send is due (the
        caller may give the outbox a fresh `sink` first, then calls `resend`)."""
        if not self._messages:
            self.failure, self._attempts = None, 0
            return False
        self.sink.all_acked([])  # serve delivery callbacks (librdkafka runs them in poll)
        kept: list[_Message] = []
        self._failed = []
        for m in self._messages:
            f = m.future
            if f is None or (f.is_done and f.failed()):
                self._failed.append(m)
                kept.append(m)
            elif not f.is_done:
                kept.append(m)
        self._messages = kept
        if not kept:
            self.failure, self._attempts = None, 0
        if not self._failed:
            return False
        if self.failure is None:
            first = self._failed[0]
            why = first.error or first.future.exception
            self.failure = f"{len(self._failed)} messages to {first.topic} rejected: {why}"
            self._attempts, self._retry_at = 0, now + 1.0
            return False
        return now >= self._retry_at

    def resend(self, now: float) -> None:
        """Send the rejected messages again, in their order; the next try after 2, 4 ... 30 s."""
        for m in self._failed:
            self._send(m)
        self.retries += len(self._failed)
        self._failed = []
        self._attempts += 1
        self._retry_at = now + min(2.0**self._attempts, MAX_BACKOFF_S)
