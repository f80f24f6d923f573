from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from detector.config import load_config
from detector.core.features import FeatureSpec
from detector.jsonl import write_jsonl
from simulators.sensors import FAULTS, SENSORS, sensor_records, simulate_sensors

ROOT = Path(__file__).resolve().parents[2]


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_jsonl(sensor_records(simulate_sensors(20, 3, 0.5, seed)), str(tmp_path / f"{name}.jsonl"))
    h = {n: hashlib.sha256((tmp_path / f"{n}.jsonl").read_bytes()).hexdigest() for n in "abc"}
    assert h["a"] == h["b"] != h["c"]


def test_daily_cycle_and_physics() -> None:
    c = simulate_sensors(30, 7, 0.0, 5)
    assert c["label"].sum() == 0
    # Current follows load; temperature follows it with a lag: strongly correlated.
    assert np.corrcoef(c["current"], c["load"])[0, 1] > 0.95
    assert np.corrcoef(c["temperature"] - c["temperature"].mean(), c["load"])[0, 1] > 0.2
    hours = ((c["t"] % 86400) // 3600).astype(int)
    by_hour = np.array([c["load"][hours == h].mean() for h in range(24)])
    assert by_hour.max() - by_hour.min() > 0.3  # a real daily cycle


def test_every_fault_type_is_labelled_with_an_incident() -> None:
    c = simulate_sensors(200, 10, 1.0, 6)
    recs = [r for r in sensor_records(c) if r["label"] == 1]
    assert {r["fault_type"] for r in recs} == set(FAULTS)
    assert all(r["incident_id"] for r in recs)


def test_stuck_fault_freezes_one_sensor_only_during_its_incident() -> None:
    c = simulate_sensors(200, 10, 1.0, 7)
    stuck = c["fault"] == FAULTS.index("stuck")
    for inc in np.unique(c["incident"][stuck]):
        rows = c["incident"] == inc
        frozen = [s for s in SENSORS if np.ptp(c[s][rows]) == 0]
        assert len(frozen) == 1
        machine = c["machine"][rows][0]
        before = (c["machine"] == machine) & ~rows
        assert np.ptp(c[frozen[0]][before]) > 0


def test_shipped_sensor_config_validates_the_records() -> None:
    spec = FeatureSpec(load_config(ROOT / "config/sensors.yaml").features)
    import orjson

    for r in list(sensor_records(simulate_sensors(3, 1, 0.0, 8)))[:50]:
        ev = spec.parse(orjson.dumps(r))
        assert len(ev.numeric) == 4
