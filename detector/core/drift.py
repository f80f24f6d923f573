"""How far live traffic has moved from the model's calibration set: the population stability
index (PSI) of the score and of each feature, over a sliding day. Pure.

    ref = reference(cal_scores, cal_features, spec.names)      # at training: into the metadata
    drift = Drift(ref)                                         # in the daemon, per model
    drift.update(scores.score, scores.observed, now)           # every batch (scored events)
    score_psi, feature_psi, worst = drift.psi()                # NaN until DRIFT_MIN_EVENTS

Each distribution is cut into BINS bins at the calibration set's deciles; live counts decay with
a one-day time constant, so the figure follows the last day or so. PSI = sum (p - q) ln(p / q):
under 0.1 is read as stable, 0.1-0.25 as a moderate shift, over 0.25 as a shift that calls for a
new model (the usual reading in credit scoring, where the index comes from).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

BINS = 10
DAY_S = 86_400.0
# Below this many (decayed) live events the figure would be noise: NaN.
DRIFT_MIN_EVENTS = 500.0
# Empty bins count as this share: ln(p / 0) is undefined.
FLOOR = 1e-4


def _bins(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inner edges at the deciles (ties merged) and each bin's share of `values`."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    edges = np.unique(np.quantile(v, np.linspace(0, 1, BINS + 1)[1:-1])) if len(v) else np.zeros(0)
    share = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1) / max(len(v), 1)
    return edges, share


def reference(scores: np.ndarray, features: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """The calibration set's bins, for the model's metadata."""
    parts = [("score", scores), *((n, features[:, j]) for j, n in enumerate(names))]
    out = {}
    for name, values in parts:
        edges, share = _bins(values)
        out[name] = {"edges": edges.tolist(), "share": share.tolist()}
    return out


def _psi(live: np.ndarray, ref: np.ndarray) -> float:
    p = np.maximum(live / max(live.sum(), 1e-12), FLOOR)
    q = np.maximum(ref, FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))


class Drift:
    def __init__(self, ref: dict[str, Any], names: Sequence[str], tau_s: float = DAY_S) -> None:
        self.names = [n for n in names if n in ref]
        self.cols = [list(names).index(n) for n in self.names]
        self.score = (np.asarray(ref["score"]["edges"]), np.asarray(ref["score"]["share"]))
        self.features = [(np.asarray(ref[n]["edges"]), np.asarray(ref[n]["share"])) for n in self.names]
        self.counts = [np.zeros(len(self.score[1])), *(np.zeros(len(s)) for _, s in self.features)]
        self.tau, self.at = tau_s, float("nan")

    def update(self, score: np.ndarray, observed: np.ndarray, now: float) -> None:
        if not len(score):
            return
        decay = 1.0 if math.isnan(self.at) else math.exp(-max(now - self.at, 0.0) / self.tau)
        self.at = now
        columns = [score, *(observed[:, c] for c in self.cols)]
        for counts, (edges, share), values in zip(self.counts, [self.score, *self.features], columns, strict=True):
            counts *= decay
            counts += np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(share))[: len(share)]

    def psi(self) -> tuple[float, float, str]:
        """(score PSI, the largest feature PSI, that feature's name); NaN with too few events."""
        if self.counts[0].sum() < DRIFT_MIN_EVENTS:
            return float("nan"), float("nan"), ""
        s = _psi(self.counts[0], self.score[1])
        per = [_psi(c, share) for c, (_, share) in zip(self.counts[1:], self.features, strict=True)]
        k = int(np.argmax(per)) if per else -1
        return s, (per[k] if per else float("nan")), (self.names[k] if per else "")
