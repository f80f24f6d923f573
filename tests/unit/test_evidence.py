from __future__ import annotations

import numpy as np

from detector.evidence import LINEAR_ABOVE, MAX_SURPRISE, Evidence, fit_evidence


def fitted(seed: int = 0, n: int = 20_000) -> tuple[Evidence, np.ndarray]:
    """Correlated Gaussian residuals: the whitening must undo the correlation."""
    rng = np.random.default_rng(seed)
    mix = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 2.0]])
    residuals = rng.standard_normal((n, 3)) @ mix.T + np.array([0.5, 0.5, -1.0])
    errors = np.square(residuals).mean(axis=1)
    return fit_evidence(errors, residuals, tau=100.0), residuals


def test_whitening_undoes_the_normal_correlation() -> None:
    ev, residuals = fitted()
    d = (residuals - ev.mean) @ ev.whiten
    assert np.allclose(np.cov(d, rowvar=False), np.eye(3), atol=0.05)
    assert np.allclose(ev.mean, [0.5, 0.5, -1.0], atol=0.05)
    # A move against the correlation (cols 0 and 1 apart) is far more surprising than the same
    # move along it (together), though both have the same plain squared error.
    moves = ev.mean + np.array([[3.0, 2.4, 0.0], [-3.0, 2.4, 0.0]])
    along, against = ev.surprise(np.full(2, ev.error_median), moves)
    assert against > along + 0.3


def test_typical_events_add_nothing_and_absurd_ones_add_linearly() -> None:
    ev, _ = fitted()
    zero = ev.mean[None]
    assert ev.surprise(np.array([ev.error_median * 0.5]), zero)[0] == 0.0
    at = lambda k: float(ev.surprise(np.array([ev.error_median * k]), zero)[0])  # noqa: E731
    assert at(10) == np.float32(0.5 * np.log10(10))  # the whitened part is 0 at the mean
    knee, far = at(LINEAR_ABOVE), at(10 * LINEAR_ABOVE)
    assert far - knee > 0.5 * 9 / np.log(10) - 1e-3  # linear past the knee, not +0.5 as the log gives
    assert at(1e9) == MAX_SURPRISE  # capped: one absurd event cannot keep its stream alerting for days


def test_evidence_adds_up_a_burst_and_decays_with_time() -> None:
    ev, _ = fitted()
    res = ev.mean[None]
    err = np.array([ev.error_median * 100.0], np.float32)
    s = float(ev.surprise(err, res)[0])
    one = ev.accumulate(err, res, np.array([1e9]), np.array([0.0], np.float32), np.array([False]))
    assert np.isclose(one[0], s)
    burst = ev.accumulate(err, res, np.array([0.0]), one, np.array([False]))
    assert np.isclose(burst[0], 2 * s)
    later = ev.accumulate(err, res, np.array([ev.tau]), one, np.array([False]))
    assert np.isclose(later[0], s + s / np.e, rtol=1e-5)
    # Out of order: no decay (never growth); warming: nothing added.
    assert np.isclose(ev.accumulate(err, res, np.array([-50.0]), one, np.array([False]))[0], 2 * s)
    assert np.isclose(ev.accumulate(err, res, np.array([0.0]), one, np.array([True]))[0], s)


def test_round_trip_through_metadata() -> None:
    ev, residuals = fitted()
    back = Evidence.from_dict(ev.to_dict())
    err = np.square(residuals[:100]).mean(axis=1)
    assert np.allclose(back.surprise(err, residuals[:100]), ev.surprise(err, residuals[:100]), atol=1e-6)
    assert back.tau == ev.tau == 100.0


def test_a_constant_column_gets_a_floor_not_an_infinite_weight() -> None:
    rng = np.random.default_rng(1)
    residuals = np.column_stack([rng.standard_normal(1000), np.zeros(1000)])
    ev = fit_evidence(np.ones(1000), residuals, tau=10.0)
    assert np.all(np.isfinite(ev.whiten))
    assert np.isfinite(ev.surprise(np.ones(1), np.array([[0.0, 1.0]]))[0])
