"""One monotonic time budget shared by every step of a shutdown (or of one checkpoint).

    d = Deadline(20.0)                        # runtime.shutdown_timeout_seconds, from the stop request
    sink.flush(d.left(FLUSH_TIMEOUT_S))       # each step waits at most what is left, capped
    d.check("flushing the alerts")            # ShutdownTimeout naming the step once it has run out

Steps that take the budget in turn cannot add up past it: the shutdown ends inside it or says
which step ran out (as quix-streams' `Deadline`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from detector.exceptions import DetectorError


class ShutdownTimeout(DetectorError):
    """A step did not finish inside the budget; the message names it."""


class Deadline:
    """`error` is what running out raises: ShutdownTimeout ends the process with its message; a
    checkpoint's own deadline outside a shutdown raises the retried DeliveryFailed instead."""

    def __init__(
        self,
        seconds: float,
        error: type[DetectorError] = ShutdownTimeout,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds, self.error, self.clock = seconds, error, clock
        self.ends = clock() + seconds

    def remaining(self) -> float:
        return max(self.ends - self.clock(), 0.0)

    def left(self, cap: float = float("inf")) -> float:
        """What a step may wait: the time left, at most `cap`."""
        return min(self.remaining(), cap)

    @property
    def expired(self) -> bool:
        return self.clock() >= self.ends

    def check(self, step: str) -> None:
        """Raise `error` naming `step` when the budget is spent."""
        if self.expired:
            raise self.error(f"{step} ran out of the {self.seconds:g}s budget")
