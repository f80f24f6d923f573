from __future__ import annotations

import numpy as np

from detector.core.budget import STEP, AlertBudget


def test_never_below_the_calibrated_threshold() -> None:
    b = AlertBudget(calibrated=5.0, per_10k=2.0)
    limits = b.thresholds(np.random.default_rng(0).exponential(size=200_000) * 0.01)
    assert np.all(limits >= 5.0)


def test_holds_the_rate_on_a_shifted_stream() -> None:
    rng = np.random.default_rng(1)
    calibrated = float(np.quantile(rng.exponential(size=100_000), 1 - 2e-4))
    b = AlertBudget(calibrated, per_10k=2.0)
    shifted = rng.exponential(size=600_000) * 3.0  # every score 3x: the calibrated threshold floods
    limits = np.concatenate([b.thresholds(shifted[k : k + 777]) for k in range(0, len(shifted), 777)])
    tail = slice(200_000, None)  # once the histogram has filled
    assert (shifted[tail] > calibrated).mean() > 50 * 2e-4
    assert (shifted[tail] > limits[tail]).mean() < 2 * 2e-4
    assert b.effective > calibrated


def test_batching_does_not_change_the_thresholds() -> None:
    s = np.random.default_rng(2).exponential(size=50_000) * 2
    a, b = AlertBudget(1.0, 10.0), AlertBudget(1.0, 10.0)
    la = a.thresholds(s)
    lb = np.concatenate([b.thresholds(s[k : k + 313]) for k in range(0, len(s), 313)])
    assert np.array_equal(la, lb)
    assert a.seen == b.seen == len(s) and len(s) > STEP
