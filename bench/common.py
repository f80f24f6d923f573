"""Shared benchmark plumbing: repetitions with median and spread, machine facts."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def repeat(fn: Callable[[], float], reps: int, warmup: int = 1) -> dict[str, float]:
    """Run `fn` (which returns a rate) warmup + reps times; median and spread of the reps."""
    for _ in range(warmup):
        fn()
    vals = [fn() for _ in range(reps)]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "reps": reps}


def rate(n: int, fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy

    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }
    try:
        import kafka

        info["kafka_python"] = kafka.__version__
    except ImportError:
        pass
    return info


def fmt(x: float | None) -> str:
    """A figure for the tables; a dash where the run had none (too few events to time)."""
    if x is None:
        return "–"
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}"
