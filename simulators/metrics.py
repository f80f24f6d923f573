"""Operations metrics: single-value series (request counts, CPU, latency) with labelled anomaly
windows, for the operations user (config/metrics.yaml).

    cols = simulate_metrics(series=20, days=14, anomaly_share=1.0, seed=1)
    write_jsonl(metric_records(cols), "metrics.jsonl")

Each series draws its kind (counts, a percentage, a latency), its level and scale (from a few
requests to hundreds of thousands: a model must not lean on one scale), its sampling period
(1, 5, 15 or 60 minutes: 288 readings a simulated day either way, so the period changes the
time a series spans, not its length), daily and weekly seasonality, a slow trend and noise.
Anomalies, injected after the first 30% of a series (training takes the first 15%): a level
shift, spikes, a variance burst, a slow leak (a linear creep), a stuck sensor (the value frozen),
a dip. Each anomaly is a window of labelled readings (`label` 1, `fault_type`, `incident_id`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from simulators.output import EPOCH

ANOMALIES = ("level_shift", "spike", "variance_burst", "slow_leak", "stuck", "dip")
KINDS = ("requests", "cpu_percent", "latency_ms")
PERIODS_S = (60.0, 300.0, 900.0, 3600.0)
READINGS_PER_DAY = 288


def _series(rng: np.random.Generator, days: int) -> tuple[dict[str, np.ndarray], int]:
    n = days * READINGS_PER_DAY
    period = float(rng.choice(PERIODS_S))
    t = np.arange(n) * period
    kind = int(rng.integers(len(KINDS)))
    hour = (t % 86400) / 3600
    daily = np.cos(2 * np.pi * (hour - rng.uniform(10, 16)) / 24)
    weekend = ((t // 86400) % 7) >= 5
    shape = 1 + rng.uniform(0.1, 0.5) * daily - rng.uniform(0, 0.3) * weekend + rng.uniform(-0.1, 0.1) * t / t[-1]
    level = float(np.exp(rng.uniform(np.log(5), np.log(2e5)))) if kind == 0 else float(rng.uniform(10, 400))
    if kind == 1:
        level = float(rng.uniform(10, 60))
    noise = rng.uniform(0.02, 0.12)
    v = level * shape * (1 + noise * rng.standard_normal(n))
    if kind == 2:  # latencies: heavy right tail
        v = v * np.exp(0.15 * rng.standard_normal(n))
    return {
        "t": t,
        "value": v,
        "label": np.zeros(n, np.int64),
        "fault": np.full(n, -1, np.int64),
        "incident": np.full(n, -1, np.int64),
    }, kind


def _inject(m: dict[str, np.ndarray], kind: int, anomaly: str, incident: int, rng: np.random.Generator) -> None:
    v, n = m["value"], len(m["value"])
    start = int(rng.uniform(0.3, 0.9) * n)
    sd = float(np.std(np.diff(v[: int(0.15 * n)]))) / np.sqrt(2) + 1e-9
    lvl = float(np.median(v[:start]))
    if anomaly == "level_shift":
        idx = np.arange(start, min(start + int(rng.integers(24, 96)), n))
        v[start:] += rng.choice([-1, 1]) * rng.uniform(0.3, 0.8) * lvl
    elif anomaly == "spike":
        idx = np.arange(start, min(start + int(rng.integers(1, 4)), n))
        v[idx] += rng.uniform(6, 12) * sd + rng.uniform(0.5, 1.5) * lvl
        idx = np.arange(start, min(start + 12, n))
    elif anomaly == "variance_burst":
        idx = np.arange(start, min(start + int(rng.integers(12, 48)), n))
        v[idx] += rng.normal(0, 6 * sd, len(idx))
    elif anomaly == "slow_leak":
        idx = np.arange(start, min(start + int(rng.integers(288, 576)), n))
        v[idx] += np.linspace(0, rng.uniform(0.5, 1.0) * lvl, len(idx))
    elif anomaly == "stuck":
        idx = np.arange(start, min(start + int(rng.integers(36, 144)), n))
        v[idx] = v[start]
    else:  # dip: the service drops most of its work for a while
        idx = np.arange(start, min(start + int(rng.integers(6, 36)), n))
        v[idx] *= rng.uniform(0.05, 0.4)
    if kind == 1:
        np.clip(v, 0, 100, out=v)
    np.maximum(v, 0, out=v)
    m["label"][idx] = 1
    m["fault"][idx] = ANOMALIES.index(anomaly)
    m["incident"][idx] = incident


def simulate_metrics(series: int, days: int, anomaly_share: float, seed: int) -> dict[str, np.ndarray]:
    """All readings as columns, sorted by time (ties by series)."""
    root = np.random.SeedSequence(seed)
    seeds = root.spawn(series)
    plan = np.random.default_rng(root.spawn(1)[0])
    parts = []
    incident = 0
    for k in range(series):
        rng = np.random.default_rng(seeds[k])
        m, kind = _series(rng, days)
        if plan.random() < anomaly_share:
            for a in plan.choice(ANOMALIES, size=int(plan.integers(1, 3)), replace=False):
                _inject(m, kind, str(a), incident, rng)
                incident += 1
        m["series"] = np.full(len(m["t"]), k)
        m["kind"] = np.full(len(m["t"]), kind)
        parts.append(m)
    out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    order = np.lexsort((out["series"], out["t"]))
    return {key: v[order] for key, v in out.items()}


def metric_records(c: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    ts = np.datetime_as_string(EPOCH + (c["t"] * 1000).astype("timedelta64[ms]"), unit="ms")
    for i in range(len(ts)):
        f, inc = int(c["fault"][i]), int(c["incident"][i])
        yield {
            "event_id": f"x{i:09d}",
            "stream_id": f"{KINDS[int(c['kind'][i])]}-{int(c['series'][i]):04d}",
            "ts": str(ts[i]) + "Z",
            "value": round(float(c["value"][i]), 4),
            "label": int(c["label"][i]),
            "fault_type": ANOMALIES[f] if f >= 0 else None,
            "incident_id": f"anomaly-{inc:05d}" if inc >= 0 else None,
        }
