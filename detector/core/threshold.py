"""Threshold calibration for a target false-alarm rate on held-out normal scores.

    th = calibrate(normal_scores, target_rate=1e-4, method="pot")
    th.value, th.method, th.critical
    th = threshold_for(scores, 1e-4, "pot", 2.0, evidence, elapsed, seed)   # the method by data size

"pot" is peaks-over-threshold (SPOT, Siffer et al., KDD 2017): fit a generalized Pareto
distribution to the excesses over a high initial quantile, then extrapolate to the target rate,
which an empirical quantile of ~20k normal scores cannot resolve (it would hold 2 points). The
GPD is fitted by probability-weighted moments (Hosking & Wallis 1987), closed form and robust for
small tails. If the fit is poor (shape outside a sane range, or too few excesses) we fall back to
the empirical quantile and say so in `method`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from detector.core.evidence import Evidence
from detector.core.surprise import null_evidence_quantile
from detector.exceptions import DataError

# Initial threshold at the 98th percentile: the SPOT paper's default region for the tail.
INITIAL_QUANTILE = 0.98
MIN_EXCESSES = 30
# GPD shapes beyond these are not credible for reconstruction errors and signal a bad fit.
SHAPE_RANGE = (-0.5, 0.9)


@dataclass(frozen=True)
class Threshold:
    value: float
    critical: float
    method: str
    target_rate: float
    n_calibration: int
    gpd_shape: float | None = None
    gpd_scale: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def severity(self, score: float) -> str:
        """An alerting score's severity: critical from the critical level on, else warning."""
        return "critical" if score >= self.critical else "warning"


def gpd_pwm(excess: np.ndarray) -> tuple[float, float]:
    """Generalized Pareto (shape xi, scale sigma) by probability-weighted moments."""
    y = np.sort(excess)
    n = len(y)
    a0 = y.mean()
    a1 = np.sum(y * ((n - 1 - np.arange(n)) / (n - 1))) / n  # E[X (1 - F(X))]
    k = a0 / (a0 - 2 * a1) - 2  # Hosking's k = -xi
    sigma = 2 * a0 * a1 / (a0 - 2 * a1)
    return float(-k), float(sigma)


def pot_quantile(scores: np.ndarray, rate: float) -> tuple[float, float, float] | None:
    t = float(np.quantile(scores, INITIAL_QUANTILE))
    excess = scores[scores > t] - t
    if len(excess) < MIN_EXCESSES:
        return None
    xi, sigma = gpd_pwm(excess)
    if not (SHAPE_RANGE[0] < xi < SHAPE_RANGE[1]) or sigma <= 0:
        return None
    # The shape counts only beyond two standard errors of its estimate ((1 + xi) / sqrt(n) for n
    # excesses), else the tail is exponential (shape 0), what a decayed sum of calibrated
    # surprises has: 32 excesses of a 1,624-event calibration set fitted 0.22 +- 0.24, and the
    # extrapolated threshold stood at twice every score of its test file, fraud included.
    se = (1.0 + abs(xi)) / np.sqrt(len(excess))
    shrunk = float(np.sign(xi) * max(abs(xi) - 2.0 * se, 0.0))
    if shrunk != xi:
        xi, sigma = shrunk, float(np.mean(excess)) if shrunk == 0.0 else sigma
    ratio = rate * len(scores) / len(excess)
    if abs(xi) < 1e-6:
        z = t - sigma * np.log(ratio)
    else:
        z = t + sigma / xi * (ratio ** (-xi) - 1)
    return float(z), xi, sigma


def calibrate(
    scores: np.ndarray, target_rate: float, method: Literal["pot", "quantile"] = "pot", critical_multiplier: float = 2.0
) -> Threshold:
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise ValueError("no calibration scores")
    if method == "pot":
        fit = pot_quantile(s, target_rate)
        if fit is not None:
            z, xi, sigma = fit
            # Severity: critical where the model expects 10x fewer false alarms, or the multiplier.
            zc = pot_quantile(s, target_rate / 10)
            crit = max(zc[0] if zc else z * critical_multiplier, z)
            return Threshold(z, crit, "pot", target_rate, len(s), xi, sigma)
        method_used = "quantile (pot fit rejected)"
    else:
        method_used = "quantile"
    z = float(np.quantile(s, 1 - target_rate))
    return Threshold(z, z * critical_multiplier, method_used, target_rate, len(s))


# Below this many calibration events, no threshold (every method would rest on a handful of points).
MIN_CALIBRATION_EVENTS = 20
# Peaks-over-threshold needs about 30 excesses over the 98th percentile.
POT_MIN_EVENTS = 1500


def threshold_for(
    scores: np.ndarray,
    rate: float,
    method: Literal["pot", "quantile"],
    critical_multiplier: float,
    evidence: Evidence | None,
    elapsed: Callable[[], list[np.ndarray]],
    seed: int,
) -> Threshold:
    """The threshold of a model for the target false-alarm `rate`, by the method its calibration
    `scores` support: the empirical quantile with at least 10 / rate events; peaks-over-threshold
    with at least POT_MIN_EVENTS; below that, with calibrated evidence, the quantile of the
    evidence that calibrated surprises would build up over the calibration streams' own spacing
    (simulated; `elapsed()` gives each stream's gaps); otherwise refused (DataError, one line).
    A model scored by anomaly likelihood takes the normal tail's level."""
    n = len(scores)
    if evidence is not None and evidence.likelihood is not None:
        # The likelihood's score is -ln of a normal tail probability: the target rate's level,
        # or the calibration set's own quantile where it is large enough and says more.
        value = -float(np.log(rate))
        if n * rate >= 10:
            value = max(value, float(np.quantile(scores, 1 - rate)))
        return Threshold(value, max(value, -float(np.log(rate / 10))), "likelihood (normal tail)", rate, n)
    if n < MIN_CALIBRATION_EVENTS:
        raise DataError(
            f"{n} calibration events past the warm-up; a threshold needs at least {MIN_CALIBRATION_EVENTS} "
            "(more training data, or a larger model.validation_split)"
        )
    if n * rate >= 10:
        return calibrate(scores, rate, "quantile", critical_multiplier)
    if n >= POT_MIN_EVENTS and method == "pot":
        th = calibrate(scores, rate, "pot", critical_multiplier)
        if th.method == "pot":
            return th
    if evidence is None:
        raise DataError(
            f"model.target_false_alarm_rate {rate:g} cannot be supported by {n} calibration events without evidence "
            f"(model.evidence_seconds 0): the empirical quantile needs {int(np.ceil(10 / rate))} events"
        )
    stream_elapsed = elapsed()
    value = null_evidence_quantile(stream_elapsed, evidence.tau, evidence.per_event, evidence.allowance, rate, seed)
    crit = null_evidence_quantile(stream_elapsed, evidence.tau, evidence.per_event, evidence.allowance, rate / 10, seed)
    return Threshold(value, max(crit, value), "null-simulation", rate, n)
