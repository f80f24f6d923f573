from __future__ import annotations

import numpy as np

from detector.core.evidence import ALLOWANCE, Evidence, fit_evidence
from detector.core.surprise import fisher


def fitted(seed: int = 0, n: int = 20_000) -> tuple[Evidence, np.ndarray]:
    """Correlated Gaussian residuals: the whitening must undo the correlation."""
    rng = np.random.default_rng(seed)
    mix = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 2.0]])
    residuals = rng.standard_normal((n, 3)) @ mix.T + np.array([0.5, 0.5, -1.0])
    errors = np.square(residuals).mean(axis=1)
    return fit_evidence(errors, residuals, None, None, tau=100.0), residuals


def surprise(ev: Evidence, err: np.ndarray, res: np.ndarray) -> np.ndarray:
    return fisher(ev.parts(err, res, None))


def test_whitening_undoes_the_normal_correlation() -> None:
    ev, residuals = fitted()
    d = (residuals - ev.mean) @ ev.whiten
    assert np.allclose(np.cov(d, rowvar=False), np.eye(3), atol=0.05)
    assert np.allclose(ev.mean, [0.5, 0.5, -1.0], atol=0.05)
    # A move against the correlation (cols 0 and 1 apart) is far more surprising than the same
    # move along it (together), though both have the same plain squared error.
    moves = ev.mean + np.array([[3.0, 2.4, 0.0], [-3.0, 2.4, 0.0]])
    err = np.full(2, float(np.median(np.square(moves).mean(axis=1))))
    along, against = surprise(ev, err, moves)
    assert against > along + 3.0


def test_surprise_of_normal_events_is_calibrated() -> None:
    """On fresh normal events each part's -ln p is Exp(1): P(part > t) ~ e^-t."""
    ev, _ = fitted()
    _, fresh = fitted(seed=5, n=20_000)
    err = np.square(fresh).mean(axis=1)
    parts = ev.parts(err, fresh, None)
    for t in (1.0, 3.0, 6.0):
        assert np.allclose((parts > t).mean(axis=0), np.exp(-t), rtol=0.35)


def acc(ev: Evidence, err: np.ndarray, res: np.ndarray, elapsed: float, prev: float, warm: bool = False) -> float:
    state = {"evidence": np.array([prev], np.float32), "s_mean": np.zeros(1), "s_var": np.zeros(1)}
    score, after, driver = ev.accumulate(err, res, None, np.array([elapsed]), state, np.array([5]), np.array([warm]))
    assert after["evidence"][0] == score[0] and driver[0] in (0, 1)
    return float(score[0])


def test_evidence_adds_up_a_burst_and_decays_with_time() -> None:
    ev, _ = fitted()
    res = ev.mean[None] + 6.0
    err = np.array([float(np.square(res).mean())], np.float32)
    s = float(surprise(ev, err, res)[0]) - ALLOWANCE
    one = acc(ev, err, res, 1e9, 0.0)
    assert np.isclose(one, s, rtol=1e-5)
    assert np.isclose(acc(ev, err, res, 0.0, one), 2 * s, rtol=1e-5)
    assert np.isclose(acc(ev, err, res, ev.tau, one), s + s / np.e, rtol=1e-5)
    # Out of order: no decay (never growth); warming: nothing added.
    assert np.isclose(acc(ev, err, res, -50.0, one), 2 * s, rtol=1e-5)
    assert np.isclose(acc(ev, err, res, 0.0, one, warm=True), s, rtol=1e-5)


def test_per_event_decay_ignores_the_sampling_interval() -> None:
    ev, _ = fitted()
    per_event = Evidence(**{**ev.__dict__, "per_event": True, "tau": 5.0})
    res = ev.mean[None] + 6.0
    err = np.array([float(np.square(res).mean())], np.float32)
    assert acc(per_event, err, res, 60.0, 3.0) == acc(per_event, err, res, 3600.0, 3.0)


def test_round_trip_through_metadata() -> None:
    ev, residuals = fitted()
    back = Evidence.from_dict(ev.to_dict())
    err = np.square(residuals[:100]).mean(axis=1)
    assert np.allclose(back.parts(err, residuals[:100], None), ev.parts(err, residuals[:100], None), atol=1e-6)
    assert back.tau == ev.tau == 100.0


def test_a_constant_column_gets_a_floor_not_an_infinite_weight() -> None:
    rng = np.random.default_rng(1)
    residuals = np.column_stack([rng.standard_normal(1000), np.zeros(1000)])
    ev = fit_evidence(rng.random(1000), residuals, None, None, tau=10.0)
    assert np.all(np.isfinite(ev.whiten))
    assert np.isfinite(surprise(ev, np.ones(1), np.array([[0.0, 1.0]]))[0])
