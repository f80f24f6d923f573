"""Calibrated surprise: each part of the score becomes a tail probability under normal traffic.

    tail = fit_tail(normal_values)            # empirical body + generalized Pareto tail (scipy.stats)
    nlp = tail.neg_log_sf(values)             # -ln P(X >= value) under normal traffic, >= 0
    s = fisher(np.stack([nlp_a, nlp_b], 1))   # one event surprise, -ln of the combined p-value

A part's raw value (an error, a Mahalanobis distance, a profile's tail sum) means nothing across
models and data sets; its tail probability under normal traffic does. With every part a p-value,
the parts combine by Fisher's method, and the event's surprise -ln p is Exp(1) under normal
traffic whatever the data: a threshold on it (and on the evidence that adds surprises up) is a
probability, which is what transfers to data the model was not trained on.

The tail beyond the sample's upper `frac` is a generalized Pareto distribution fitted by maximum
likelihood (`scipy.stats.genpareto`, location fixed at the threshold), as peaks-over-threshold
does (Siffer et al., KDD 2017). The shape is clamped to [0, 0.5]: a negative shape would give the
tail a finite end (an event beyond it would be "impossible", p = 0, and every such event would tie
at the cap); above 0.5 the fit of a few dozen excesses is noise. With fewer than MIN_EXCESSES
excesses the tail is exponential (shape 0, scale = the mean excess), the method says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# Fewer excesses than this: the exponential tail (one parameter) instead of the GPD (two).
MIN_EXCESSES = 30
# The tail starts at the (1 - frac) quantile, frac = TAIL_EVENTS / n within TAIL_FRACTION: about
# 100 excesses where the sample allows, never fewer than 2% or more than 20% of it.
TAIL_EVENTS = 100
TAIL_FRACTION = (0.02, 0.2)
SHAPE_RANGE = (0.0, 0.5)
# Kept quantiles of the body: 1,024 levels resolve p-values to 1e-3 below the tail's start.
BODY_POINTS = 1024
# -ln p is capped here (p = 1e-20): far beyond any threshold, finite for the evidence.
MAX_NEG_LOG_P = 46.0


@dataclass(frozen=True)
class Tail:
    body: np.ndarray  # sorted quantiles of the normal sample (up to BODY_POINTS)
    u: float  # the tail starts here
    frac: float  # P(X > u) under normal traffic
    shape: float  # GPD shape (0: exponential)
    scale: float  # GPD scale
    method: str  # "gpd" or "exponential"
    n: int  # size of the sample it was fitted on

    def __post_init__(self) -> None:
        # -ln of the smoothed empirical survival at each kept quantile (searchsorted's answer k
        # reads entry k): the body is one search and one gather on the hot path.
        m = len(self.body)
        object.__setattr__(self, "_body32", self.body.astype(np.float32))
        object.__setattr__(self, "_nlp", -np.log((m - np.arange(m + 1) + 1.0) / (m + 1.0)))

    def neg_log_sf(self, x: np.ndarray) -> np.ndarray:
        """-ln P(X >= x) for each x (NaN counts as unremarkable: 0)."""
        body = self._body32 if x.dtype == np.float32 else self.body  # type: ignore[attr-defined]
        # Right-continuous empirical survival over the kept quantiles, smoothed (k + 1) / (m + 1).
        out = self._nlp.take(np.searchsorted(body, x, side="left"))  # type: ignore[attr-defined]
        over = np.flatnonzero(x > self.u)
        if len(over):
            e = np.maximum(x[over].astype(np.float64) - self.u, 0.0) / self.scale
            if self.shape > 1e-9:
                nlp_tail = np.log1p(self.shape * e) / self.shape
            else:
                nlp_tail = e
            out[over] = np.maximum(out[over], nlp_tail - np.log(self.frac))
        out[np.isnan(x)] = 0.0
        return np.minimum(out, MAX_NEG_LOG_P)

    def to_dict(self) -> dict[str, Any]:
        return {
            "body": self.body.tolist(),
            "u": self.u,
            "frac": self.frac,
            "shape": self.shape,
            "scale": self.scale,
            "method": self.method,
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tail:
        return cls(
            np.asarray(d["body"], np.float64),
            float(d["u"]),
            float(d["frac"]),
            float(d["shape"]),
            float(d["scale"]),
            str(d["method"]),
            int(d["n"]),
        )


def fit_tail(values: np.ndarray) -> Tail:
    """A Tail from normal values (at least 10 finite ones)."""
    s = np.sort(np.asarray(values, np.float64)[np.isfinite(values)])
    n = len(s)
    if n < 10:
        raise ValueError(f"{n} normal values; a tail needs at least 10")
    frac = float(np.clip(TAIL_EVENTS / n, *TAIL_FRACTION))
    u = float(np.quantile(s, 1.0 - frac))
    excess = s[s > u] - u
    levels = np.linspace(0.0, 1.0, min(BODY_POINTS, n))
    body = np.quantile(s, levels)
    frac = max(len(excess) / n, 1.0 / n)  # the empirical share above u (ties at u are not excesses)
    spread = float(np.mean(excess)) if len(excess) else 0.0
    floor = max(1e-6 * (abs(u) + 1.0), 1e-9)
    if len(excess) >= MIN_EXCESSES and spread > floor:
        from scipy.stats import genpareto

        shape, _, scale = genpareto.fit(excess, floc=0.0)
        shape = float(np.clip(shape, *SHAPE_RANGE))
        if shape == SHAPE_RANGE[0]:  # refit the scale of the clamped (exponential) tail
            scale = spread
        return Tail(body, u, frac, shape, max(float(scale), floor), "gpd", n)
    return Tail(body, u, frac, 0.0, max(spread, floor), "exponential", n)


def fisher(neg_log_p: np.ndarray) -> np.ndarray:
    """Fisher's combination of K parts per row ((n, K) of -ln p): X = sum of the -ln p is
    Gamma(K, 1) under the null, so the combined p = e^-X * sum_{i<K} X^i / i! (closed form, no
    special functions on the hot path). Returns -ln of it, >= 0."""
    x = np.asarray(neg_log_p, np.float64)
    k = x.shape[1]
    total = x.sum(axis=1)
    series = np.ones_like(total)
    term = np.ones_like(total)
    for i in range(1, k):
        term = term * total / i
        series += term
    return np.maximum(total - np.log(series), 0.0)


def null_evidence_quantile(
    elapsed: list[np.ndarray], tau: float, per_event: bool, allowance: float, rate: float, seed: int
) -> float:
    """The evidence level that calibrated surprises (Exp(1), independent) exceed at `rate` per
    event, by simulating the evidence over the calibration streams' own spacing (`elapsed`: each
    stream's seconds between events), repeated until 50 / rate events are simulated."""
    rng = np.random.default_rng(seed)
    n = sum(len(e) for e in elapsed)
    if n == 0:
        raise ValueError("no calibration events to simulate")
    reps = max(1, math.ceil(50.0 / rate / n))
    decays = [np.exp(-(np.ones_like(e) if per_event else np.maximum(e, 0.0)) / tau) for e in elapsed]
    out = []
    for d in decays:
        s = np.maximum(rng.exponential(1.0, (reps, len(d))) - allowance, 0.0)
        ev = np.zeros(reps)
        acc = np.empty((reps, len(d)))
        for j in range(len(d)):
            ev = ev * d[j] + s[:, j]
            acc[:, j] = ev
        out.append(acc.ravel())
    return float(np.quantile(np.concatenate(out), 1.0 - rate))


def tippett(neg_log_p: np.ndarray) -> np.ndarray:
    """Tippett's combination with the Bonferroni bound: p = min(1, K * the smallest part's p),
    valid whatever the dependence between the parts. Returns -ln of it, >= 0."""
    x = np.asarray(neg_log_p, np.float64)
    return np.maximum(x.max(axis=1) - np.log(x.shape[1]), 0.0)


COMBINERS = {"fisher": fisher, "tippett": tippett}
