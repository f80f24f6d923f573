"""Per-stream evidence: the score that adds up a stream's recent calibrated surprises.

One event of a velocity attack or an impossible trip is only mildly unusual; ten of them within
the hour are not. Each event has up to three parts, each a tail probability under normal traffic
(detector.core.surprise, fitted on normal held-out streams):

* `sequence`: the event's error (the reconstruction/prediction mix of the LSTM);
* `whitened`: the Mahalanobis distance of its prediction residual, which sees a small but unusual
  move in correlated columns (a country's embedding) where the plain error drowns it;
* `profile`: the stream's profile (detector.core.profile): how far its per-stream aggregates lie in
  their tails (new merchant, burst count, amount against the stream's median).

They combine by Fisher's method into the event's surprise s = -ln p (Exp(1) under normal
traffic), and the stream's evidence decays and adds each surprise beyond an allowance:

    evidence = previous * exp(-elapsed / tau) + max(s - allowance, 0)

`elapsed` is the seconds since the stream's previous event, or 1 per event (`per_event`) for
streams sampled at a fixed period, where the time between events says nothing and a decay in
seconds would make the score's scale depend on the sampling interval. Warming events add nothing.

    ev = fit_evidence(errors, residuals, profile_scores, profile, tau=1800.0)
    score, parts = ev.accumulate(error, residual, raw, elapsed, previous, warming)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.core.likelihood import Likelihood
from detector.core.profile import Profile
from detector.core.surprise import COMBINERS, Tail, fit_tail

# Only the part of a surprise beyond ln 2 (p < 0.5) adds to the evidence: half of all normal
# events add nothing, as with the median floor of the models before calibrated surprise.
ALLOWANCE = math.log(2.0)
PART_NAMES = ("sequence", "whitened", "profile")
# The per-stream state of the score: the evidence (or, with a likelihood, the decayed mean of the
# recent surprises) and the long-run mean and variance of the stream's surprises.
EVIDENCE_STATE: dict[str, tuple[object, type, float]] = {
    "evidence": ((), np.float32, 0.0),
    "s_mean": ((), np.float32, 0.0),
    "s_var": ((), np.float32, 0.0),
}
# What an alert says drove it (`driven_by`): both LSTM parts are the sequence's view.
DRIVER_OF_PART = ("sequence", "sequence", "profile")


@dataclass(frozen=True)
class Evidence:
    tau: float  # seconds (events when per_event): a stream's evidence falls to 1/e over this
    mean: np.ndarray  # (F,) mean prediction residual of normal events
    whiten: np.ndarray  # (F, F): |(residual - mean) @ whiten|^2 is the Mahalanobis distance
    error_tail: Tail
    whitened_tail: Tail
    profile: Profile | None = None
    profile_tail: Tail | None = None
    per_event: bool = False
    allowance: float = ALLOWANCE
    combine: str = "fisher"  # how the parts' p-values combine (detector.core.surprise.COMBINERS)
    # With a likelihood, the score is how unusual the stream's recent surprises are against its
    # own long run (detector.core.likelihood), not their decayed sum.
    likelihood: Likelihood | None = None

    def parts(self, error: np.ndarray, residual: np.ndarray, raw: np.ndarray | None) -> np.ndarray:
        """(n, parts) -ln p of each part, in PART_NAMES order (without a profile: two)."""
        d = (residual - self.mean) @ self.whiten
        whitened = np.einsum("ij,ij->i", d, d)
        cols = [self.error_tail.neg_log_sf(error), self.whitened_tail.neg_log_sf(whitened)]
        if self.profile is not None and self.profile_tail is not None and raw is not None:
            cols.append(self.profile_tail.neg_log_sf(self.profile.score(raw)))
        return np.stack(cols, axis=1)

    def surprise(
        self, error: np.ndarray, residual: np.ndarray, raw: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each event's combined surprise -ln p (before the allowance) and its driving part."""
        p = self.parts(error, residual, raw)
        return COMBINERS[self.combine](p), np.argmax(p, axis=1).astype(np.int8)

    def accumulate(
        self,
        error: np.ndarray,
        residual: np.ndarray,
        raw: np.ndarray | None,
        elapsed: np.ndarray,
        state: dict[str, np.ndarray],
        n_before: np.ndarray,
        warming: np.ndarray,
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """(score, the streams' new EVIDENCE_STATE, the part that drove each event's surprise).
        `state` is the streams' EVIDENCE_STATE before these events, `n_before` their event
        counts; out-of-order events do not decay the evidence."""
        s, driver = self.surprise(error, residual, raw)
        if self.likelihood is not None:
            score, short, mean, var = self.likelihood.step(
                s, state["evidence"], state["s_mean"], state["s_var"], n_before, warming
            )
            return score, {"evidence": short, "s_mean": mean, "s_var": var}, driver
        s = np.maximum(s - self.allowance, 0.0)
        s[warming] = 0.0
        step = np.ones_like(elapsed) if self.per_event else np.maximum(elapsed, 0.0)
        score = (state["evidence"] * np.exp(-step / self.tau) + s).astype(np.float32)
        return score, {**state, "evidence": score}, driver

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "calibrated",
            "tau": self.tau,
            "per_event": self.per_event,
            "allowance": self.allowance,
            "combine": self.combine,
            "likelihood": None if self.likelihood is None else self.likelihood.to_dict(),
            "mean": self.mean.tolist(),
            "whiten": self.whiten.tolist(),
            "error_tail": self.error_tail.to_dict(),
            "whitened_tail": self.whitened_tail.to_dict(),
            "profile": None if self.profile is None else self.profile.to_dict(),
            "profile_tail": None if self.profile_tail is None else self.profile_tail.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evidence:
        if d.get("kind") != "calibrated":
            raise ValueError("evidence of a model before calibrated surprise: train the model again")
        return cls(
            float(d["tau"]),
            np.asarray(d["mean"], np.float32),
            np.asarray(d["whiten"], np.float32),
            Tail.from_dict(d["error_tail"]),
            Tail.from_dict(d["whitened_tail"]),
            None if d.get("profile") is None else Profile.from_dict(d["profile"]),
            None if d.get("profile_tail") is None else Tail.from_dict(d["profile_tail"]),
            bool(d["per_event"]),
            float(d["allowance"]),
            str(d["combine"]),
            None if d.get("likelihood") is None else Likelihood.from_dict(d["likelihood"]),
        )


def whitening(residuals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, whiten) of prediction residuals (n, F). Columns that never vary (an unused one-hot
    bucket) get a variance floor of 1e-3 of the mean variance, so a residual there is loud but
    finite."""
    r = residuals.astype(np.float64)
    mean = r.mean(axis=0)
    cov = np.atleast_2d(np.cov(r, rowvar=False))
    floor = max(1e-3 * float(np.mean(np.diag(cov))), 1e-9)
    whiten = np.linalg.cholesky(np.linalg.inv(cov + floor * np.eye(len(cov))))
    return mean.astype(np.float32), whiten.astype(np.float32)


def fit_evidence(
    errors: np.ndarray,
    residuals: np.ndarray,
    raw: np.ndarray | None,
    profile: Profile | None,
    tau: float,
    per_event: bool = False,
    constant: list[int] | None = None,
    combine: str = "fisher",
    likelihood_events: float = 0.0,
) -> Evidence:
    """From normal held-out events' errors (n,), prediction residuals (n, F) and raw feature
    rows (n, F); `profile` fitted on the training streams. The residuals of `constant` columns
    (held constant by the normaliser: nothing to predict) do not count in the whitened part: their
    tiny normal variance would turn any wobble of the prediction into a huge distance."""
    mean, whiten = whitening(residuals)
    if constant:
        whiten[constant, :] = 0.0
    d = (residuals - mean) @ whiten
    profile_tail = None
    if profile is not None and raw is not None:
        profile_tail = fit_tail(profile.score(raw))
    ev = Evidence(
        tau=float(tau),
        mean=mean,
        whiten=whiten,
        error_tail=fit_tail(errors),
        whitened_tail=fit_tail(np.einsum("ij,ij->i", d, d)),
        profile=profile,
        profile_tail=profile_tail,
        per_event=per_event,
        combine=combine,
    )
    if likelihood_events > 0:
        s = ev.surprise(errors, residuals, raw)[0]
        d = np.exp(-1.0 / tau)
        # The prior of the short mean: the surprises' mean, their variance as an EW mean's.
        lk = Likelihood(float(tau), float(likelihood_events), float(np.mean(s)), float(np.var(s) * (1 - d) / (1 + d)))
        ev = dataclasses.replace(ev, likelihood=lk)
    return ev
