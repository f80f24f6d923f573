"""Shared test helpers: poll for a condition under a deadline (never sleep and hope)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        # Event().wait, not sleep: the poll interval of a deadline loop, not a guess at readiness.
        _pause(interval)
        last = check()
    return last


def _pause(seconds: float) -> None:
    import threading

    threading.Event().wait(seconds)


def free_port(pairs: int = 1) -> int:
    """A port p with p .. p+pairs-1 free on 127.0.0.1 (the broker uses p and p+1)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + pairs > 65535:
            continue
        ok = True
        for q in range(p + 1, p + pairs):
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
        if ok:
            return p
    raise RuntimeError("no free port pair")
