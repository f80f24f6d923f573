"""Drift of live traffic against the calibration set (detector.core.drift)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from detector.core.drift import DRIFT_MIN_EVENTS, Drift, reference

NAMES = ["amount", "hour"]


def world(n: int, seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.0, 1.0, n) * scale
    features = np.column_stack([np.log1p(amount), rng.integers(0, 24, n).astype(float)])
    return rng.gamma(2.0, 1.0, n) * (1 + (scale > 1)), features


def test_the_same_world_is_stable_and_a_shifted_one_is_not() -> None:
    ref = reference(*world(20_000, 1), NAMES)
    same, shifted = Drift(ref, NAMES), Drift(ref, NAMES)
    for k in range(10):  # a day of traffic in batches
        same.update(*world(1000, 10 + k), now=1e9 + k * 600)
        shifted.update(*world(1000, 10 + k, scale=20.0), now=1e9 + k * 600)
    s, f, _ = same.psi()
    assert s < 0.05 and f < 0.05
    s, f, worst = shifted.psi()
    assert s > 0.25 and f > 0.25 and worst == "amount"


def test_too_few_events_give_no_figure_and_old_traffic_fades() -> None:
    ref = reference(*world(20_000, 1), NAMES)
    d = Drift(ref, NAMES, tau_s=3600.0)
    d.update(*world(int(DRIFT_MIN_EVENTS) - 1, 2), now=0.0)
    assert all(math.isnan(x) for x in d.psi()[:2])
    d.update(*world(5000, 3, scale=20.0), now=1.0)  # a shifted hour...
    assert d.psi()[0] > 0.25
    for k in range(12):  # ...then half a day of normal traffic: the shift fades from the figure
        d.update(*world(2000, 20 + k), now=1.0 + (k + 1) * 3600)
    assert d.psi()[0] < 0.1


def test_training_writes_the_calibration_sets_bins(model_dir: Path) -> None:
    meta = json.loads((model_dir / "metadata.json").read_text())
    ref = meta["drift_reference"]
    assert set(ref) == {"score", *meta["features"]["names"]}
    assert abs(sum(ref["score"]["share"]) - 1.0) < 1e-9 and len(ref["score"]["edges"]) <= 9
