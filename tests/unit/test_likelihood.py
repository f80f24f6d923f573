from __future__ import annotations

import numpy as np

from detector.core.likelihood import Likelihood


def run(lk: Likelihood, s: np.ndarray) -> np.ndarray:
    short, mean, var = np.zeros(1), np.zeros(1), np.zeros(1)
    out = np.empty(len(s))
    for i, v in enumerate(s):
        score, short, mean, var = lk.step(np.array([v]), short, mean, var, np.array([i]), np.array([False]))
        out[i] = score[0]
    return out


def test_a_run_of_surprises_stands_out_and_a_lasting_shift_is_absorbed() -> None:
    d = np.exp(-1 / 6)
    lk = Likelihood(6.0, 500.0, 1.0, (1 - d) / (1 + d))
    rng = np.random.default_rng(0)
    calm = rng.exponential(size=3000)
    assert np.mean(run(lk, calm)[100:] > -np.log(1e-3)) < 0.01
    burst = calm.copy()
    burst[2000:2008] += 8.0  # eight readings far out of the ordinary
    assert run(lk, burst)[2007] > -np.log(1e-5)
    shifted = np.concatenate([calm[:1000], 2.0 * rng.exponential(size=4000)])  # every surprise doubles for good
    scores = run(lk, shifted)
    assert np.mean(scores[1000:1100] > -np.log(1e-3)) > np.mean(scores[4000:] > -np.log(1e-3))


def test_warming_events_score_nothing_and_leave_the_statistics() -> None:
    lk = Likelihood(6.0, 500.0, 1.0, 0.2)
    args = (np.array([50.0]), np.array([1.0]), np.array([1.0]), np.array([0.2]), np.array([10]))
    score, _, mean, var = lk.step(*args, np.array([True]))
    assert score[0] == 0.0 and mean[0] == 1.0 and var[0] == np.float32(0.2)
    assert Likelihood.from_dict(lk.to_dict()) == lk
