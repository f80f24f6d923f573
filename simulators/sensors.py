"""Industrial sensors: machines reporting temperature, vibration, pressure and current, with
daily load cycles, and labelled faults injected into a share of the machines.

    cols = simulate_sensors(machines=200, days=14, fault_share=0.1, seed=1)
    write_jsonl(sensor_records(cols), "sensors.jsonl")

Physics, roughly: load follows a daily cycle (shifts) plus noise; current is proportional to load;
temperature follows load with a lag (first-order response); vibration grows with load; pressure
is a machine-specific base plus a load term. Faults: spike (a few absurd readings on one
sensor), stuck (one sensor frozen for hours), drift (one sensor creeping away over days),
variance burst (noise x6 for an hour or two), correlation break (temperature stops following
the load). Fault events carry label 1, `fault_type` and `incident_id`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from simulators.output import EPOCH

FAULTS = ("spike", "stuck", "drift", "variance_burst", "correlation_break")
SENSORS = ("temperature", "vibration", "pressure", "current")
SITES = ("plant-a", "plant-b", "plant-c")
# One reading every 5 minutes on average, with jitter: 288 per machine per day.
PERIOD_S = 300.0


def _machine(rng: np.random.Generator, days: int) -> dict[str, np.ndarray]:
    n = int(days * 86400 / PERIOD_S)
    t = np.arange(n) * PERIOD_S + rng.uniform(0, 60, n)
    hour = (t % 86400) / 3600
    shift = rng.choice([8.0, 14.0])  # the machine's busiest hour
    load = 0.55 + 0.35 * np.cos(2 * np.pi * (hour - shift) / 24) + rng.normal(0, 0.05, n)
    weekend = ((t // 86400) % 7) >= 5
    load = np.clip(np.where(weekend, load * 0.6, load), 0.05, 1.2)
    base_t, base_p = rng.uniform(40, 60), rng.uniform(3, 6)
    temp = np.empty(n)
    temp[0] = base_t + 25 * load[0]
    alpha = 0.2  # first-order lag of the temperature behind the load, per reading
    for i in range(1, n):
        temp[i] = temp[i - 1] + alpha * (base_t + 25 * load[i] - temp[i - 1])
    return {
        "t": t,
        "load": load,
        "temperature": temp + rng.normal(0, 0.3, n),
        "vibration": np.abs(0.5 + 2.0 * load**2 + rng.normal(0, 0.08, n)),
        "pressure": base_p + 1.5 * load + rng.normal(0, 0.05, n),
        "current": 10 + 40 * load + rng.normal(0, 0.8, n),
        "label": np.zeros(n, np.int64),
        "fault": np.full(n, -1, np.int64),
        "incident": np.full(n, -1, np.int64),
    }


def _inject(m: dict[str, np.ndarray], fault: str, incident: int, rng: np.random.Generator) -> None:
    n = len(m["t"])
    start = int(rng.uniform(0.4, 0.85) * n)
    sensor = str(rng.choice(SENSORS))
    if fault == "spike":
        idx = np.arange(start, min(start + int(rng.integers(1, 4)), n))
        m[sensor][idx] *= rng.uniform(2.5, 4.0)
    elif fault == "stuck":
        idx = np.arange(start, min(start + int(rng.integers(24, 72)), n))  # 2-6 hours
        m[sensor][idx] = m[sensor][start]
    elif fault == "drift":
        idx = np.arange(start, min(start + int(rng.integers(288, 864)), n))  # 1-3 days
        scale = np.std(m[sensor][:start]) * 6
        m[sensor][idx] += np.linspace(0, scale, len(idx))
    elif fault == "variance_burst":
        idx = np.arange(start, min(start + int(rng.integers(12, 24)), n))
        m[sensor][idx] += rng.normal(0, np.std(m[sensor][:start]) * 6, len(idx))
    elif fault == "correlation_break":  # temperature flat while the load keeps cycling
        idx = np.arange(start, min(start + int(rng.integers(72, 144)), n))
        m["temperature"][idx] = np.mean(m["temperature"][:start]) + rng.normal(0, 0.3, len(idx))
    m["vibration"] = np.abs(m["vibration"])  # an amplitude: a noisy fault cannot make it negative
    m["label"][idx] = 1
    m["fault"][idx] = FAULTS.index(fault)
    m["incident"][idx] = incident


def simulate_sensors(machines: int, days: int, fault_share: float, seed: int) -> dict[str, np.ndarray]:
    root = np.random.SeedSequence(seed)
    seeds = root.spawn(machines)
    plan = np.random.default_rng(root.spawn(1)[0])
    parts = []
    incident = 0
    for k in range(machines):
        rng = np.random.default_rng(seeds[k])
        m = _machine(rng, days)
        if plan.random() < fault_share:
            _inject(m, str(plan.choice(FAULTS)), incident, rng)
            incident += 1
        m["machine"] = np.full(len(m["t"]), k)
        m["site"] = np.full(len(m["t"]), k % len(SITES))
        parts.append(m)
    out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    order = np.lexsort((out["machine"], out["t"]))
    return {key: v[order] for key, v in out.items()}


def sensor_records(c: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    ts = np.datetime_as_string(EPOCH + (c["t"] * 1000).astype("timedelta64[ms]"), unit="ms")
    for i in range(len(ts)):
        f, inc = int(c["fault"][i]), int(c["incident"][i])
        yield {
            "event_id": f"s{i:09d}",
            "stream_id": f"machine-{int(c['machine'][i]):05d}",
            "ts": str(ts[i]) + "Z",
            "temperature": round(float(c["temperature"][i]), 3),
            "vibration": round(float(c["vibration"][i]), 4),
            "pressure": round(float(c["pressure"][i]), 4),
            "current": round(float(c["current"][i]), 3),
            "site": SITES[int(c["site"][i])],
            "label": int(c["label"][i]),
            "fault_type": FAULTS[f] if f >= 0 else None,
            "incident_id": f"fault-{inc:05d}" if inc >= 0 else None,
        }
