from __future__ import annotations

import numpy as np
import pytest

from detector.core.threshold import calibrate, gpd_pwm


def test_pot_recovers_a_known_exponential_tail() -> None:
    rng = np.random.default_rng(3)
    scores = rng.exponential(1.0, 50_000)
    th = calibrate(scores, target_rate=1e-4, method="pot")
    assert th.method == "pot"
    # The exact 1e-4 quantile of Exp(1) is ln(1e4) = 9.21; 50k points hold only 5 beyond it.
    assert th.value == pytest.approx(np.log(1e4), rel=0.1)
    assert th.critical > th.value


def test_quantile_method_is_the_empirical_quantile() -> None:
    scores = np.arange(10_000, dtype=float)
    th = calibrate(scores, target_rate=0.01, method="quantile")
    assert th.value == pytest.approx(np.quantile(scores, 0.99))
    assert th.method == "quantile"


def test_gpd_pwm_recovers_its_parameters() -> None:
    rng = np.random.default_rng(5)
    xi, sigma = 0.2, 2.0
    u = rng.random(200_000)
    sample = sigma / xi * ((1 - u) ** -xi - 1)
    est_xi, est_sigma = gpd_pwm(sample)
    assert est_xi == pytest.approx(xi, abs=0.03)
    assert est_sigma == pytest.approx(sigma, rel=0.05)


def test_poor_fit_falls_back_to_the_quantile() -> None:
    scores = np.concatenate([np.zeros(1000), np.ones(5)])  # no usable tail
    th = calibrate(scores, target_rate=1e-3, method="pot")
    assert th.method.startswith("quantile")


def test_empty_scores_are_an_error() -> None:
    with pytest.raises(ValueError):
        calibrate(np.array([np.nan]), 1e-4)
