"""Shared test helpers: poll for a condition under a deadline (never sleep and hope)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

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


def lstm_scored(
    art: Any,
    spec: Any,
    events: list[Any],
    warmup: int,
    threshold: float,
    batch: int = 4096,
    error_weights: Any = None,
    evidence: Any = None,
) -> Any:
    """`score_events` through the one LSTM scorer factory, on a table that holds every stream."""
    from detector.core.scorer import lstm_scorer
    from detector.offline.dataset import score_events, stream_count

    sc = lstm_scorer(
        art.weights,
        art.norm,
        spec,
        art.window,
        warmup,
        stream_count(events),
        art.prediction_weight,
        error_weights=error_weights,
        evidence=evidence,
    )
    return score_events(events, sc, threshold, batch=batch)
