"""Anomaly likelihood: how unusual a stream's recent surprises are against its own long run.

    lk = Likelihood(short_events=6, long_events=2016, prior_mean=1.0, prior_var=1.0)
    score, short, mean, var = lk.step(s, short, mean, var, n_before, warming)

For a metric stream whose level, scale or noise moves in ways its first weeks never showed, a
surprise calibrated on those weeks drifts: every reading of a busier season looks a little odd,
and a decayed sum of them alerts for days. The likelihood asks instead whether the last few
surprises (their decayed mean over `short_events`) stand out against the same stream's own long
run: the mean and variance of that short mean over about `long_events`, starting from the
held-out normal data's as a prior worth PRIOR_EVENTS. Tracking the short mean's own variance, not
the surprises', counts their autocorrelation (a metric's errors come in runs: with the iid
formula, 4-7% of the training period's own readings alerted at a 0.1% target, measured).
z = (short - mean) / sd, score = -ln Q(z), the normal tail. This is the post-processing that the published
streaming detectors of univariate metric benchmarks (HTM's "anomaly likelihood") rely on. The
statistics are per-stream state (checkpointed), one step per event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import log_ndtr

# The held-out normal data's statistics count as this many of the stream's own events at first.
PRIOR_EVENTS = 50.0
# A floor on the long-run variance of the short mean (of Exp(1) surprises: ~(1 - d) / (1 + d)).
VAR_FLOOR = 1e-3


@dataclass(frozen=True)
class Likelihood:
    short_events: float
    long_events: float
    prior_mean: float
    prior_var: float

    def step(
        self,
        s: np.ndarray,
        short: np.ndarray,
        mean: np.ndarray,
        var: np.ndarray,
        n_before: np.ndarray,
        warming: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(score, new short mean, new long mean, new long variance) of each event's stream."""
        fresh = n_before <= 0
        mean = np.where(fresh, self.prior_mean, mean)
        var = np.where(fresh, self.prior_var, var)
        short = np.where(fresh, self.prior_mean, short)
        d = np.exp(-1.0 / self.short_events)
        new_short = d * short + (1.0 - d) * s
        sd = np.sqrt(np.maximum(var, VAR_FLOOR))
        score = np.maximum(-log_ndtr(-(new_short - mean) / sd), 0.0)
        score[warming] = 0.0
        a = 1.0 / np.minimum(n_before + PRIOR_EVENTS, self.long_events)
        dev = new_short - mean
        new_mean = np.where(warming, mean, mean + a * dev)
        new_var = np.where(warming, var, (1.0 - a) * (var + a * dev * dev))
        return (
            score.astype(np.float32),
            new_short.astype(np.float32),
            new_mean.astype(np.float32),
            new_var.astype(np.float32),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Likelihood:
        return cls(**{k: float(v) for k, v in d.items()})
