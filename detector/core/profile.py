"""The stream's profile as a part of the score: how far each per-stream feature lies in its tail.

    prof = fit_profile(spec, raw_normal)        # raw feature rows of normal training events
    t = prof.score(raw_rows)                    # (n,) sum over columns of -ln P(tail), >= 0

The per-stream columns (log seconds since the stream's previous event, its decayed recent-event
count, a numeric field against the stream's running median, "value new for this stream" flags)
its event counts over the last hour and day, each numeric field's z-score against the stream's
own history) and the raw numeric fields are what a fraud analyst's aggregate features are. Each column's
tail probability under normal traffic is read off its empirical distribution on the training
streams; the sum of their -ln is a copula-style tail score (COPOD, Li et al. 2020, without the
skewness switch: the side of each column is fixed by what it means). Which side counts:

* numeric fields, seconds since the previous event, value against the running median: both
  (a card-testing amount is tiny, a takeover's is large; a burst has short gaps, a dormant
  card's first event a long one);
* each numeric field's z-score against the stream's own history: both;
* the recent and daily event counts and the novelty flags: only the upper side (more, or new).

The sum is then one part of the event's calibrated surprise (detector.core.surprise), fitted on
held-out normal streams like the sequence parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.core.features import FeatureSpec

# Sorted normal values kept per column: p-values down to 1/2,049 (the tail beyond is the part's
# calibrated GPD tail over the sum).
SAMPLE_POINTS = 2048
# Grid points per column for the precomputed tail probabilities (detector.core.profile.Profile): a
# value's p is that of the grid point at or below it, 1/2,047 of the sample's range away at most.
GRID = 2048
BOTH, UPPER = 0, 1


@dataclass(frozen=True)
class Profile:
    columns: tuple[int, ...]
    sides: tuple[int, ...]
    samples: np.ndarray  # (columns, SAMPLE_POINTS) sorted normal values

    def __post_init__(self) -> None:
        # Each column's -ln p precomputed on a grid of GRID points over its sample's range, plus
        # a cell below and one above it: the hot path is one gather for every column (one
        # searchsorted per column and batch round took 15% of the scorer's time, measured).
        k, m = self.samples.shape
        lo = self.samples[:, 0]
        span = np.maximum(self.samples[:, -1] - lo, 1e-12)
        table = np.zeros((k, GRID + 2))
        for j in range(k):
            grid = lo[j] + span[j] * np.arange(GRID) / (GRID - 1)
            upper = (m - np.searchsorted(self.samples[j], grid, side="left") + 1.0) / (m + 1.0)
            lower = (np.searchsorted(self.samples[j], grid, side="right") + 1.0) / (m + 1.0)
            tail = 1.0 / (m + 1.0)
            if self.sides[j] == BOTH:
                p = np.minimum(2.0 * np.minimum(upper, lower), 1.0)
                below = above = min(2.0 * tail, 1.0)
            else:
                p, below, above = upper, 1.0, tail
            table[j] = -np.log(np.concatenate([[below], p, [above]]))
        object.__setattr__(self, "_cols", np.asarray(self.columns, np.intp))
        object.__setattr__(self, "_lo", lo.astype(np.float32))
        object.__setattr__(self, "_scale", ((GRID - 1) / span).astype(np.float32))
        object.__setattr__(self, "_table", table.ravel().astype(np.float32))
        object.__setattr__(self, "_base", (GRID + 2) * np.arange(k) + 1)

    def column_neg_log_p(self, x: np.ndarray) -> np.ndarray:
        """(n, columns): -ln of each column's (smoothed) tail probability, read off the grid;
        NaN (unknown) -> 0."""
        v = x.take(self._cols, axis=1)  # type: ignore[attr-defined]
        pos = np.floor((v - self._lo) * self._scale)  # type: ignore[attr-defined]
        # fmax/fmin pass NaN (an unknown value) over: it lands in the cell below, then reads 0.
        cell = np.fmin(np.fmax(pos, -1.0), float(GRID)).astype(np.intp) + self._base  # type: ignore[attr-defined]
        out = self._table.take(cell)  # type: ignore[attr-defined]
        out[np.isnan(v)] = 0.0
        return out  # type: ignore[no-any-return]

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.column_neg_log_p(x).sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "sides": list(self.sides), "samples": self.samples.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        return cls(tuple(d["columns"]), tuple(d["sides"]), np.asarray(d["samples"], np.float64))


def profile_columns(spec: FeatureSpec) -> list[tuple[int, int]]:
    """(column, side) of the profile's columns in `spec`'s vector."""
    cols: list[tuple[int, int]] = [(i, BOTH) for i, f in enumerate(spec.numeric) if f.absolute]
    if spec.dt_col >= 0:
        cols.append((spec.dt_col, BOTH))
    if spec.recent_col >= 0:
        cols.append((spec.recent_col, UPPER))
    if spec.med_col >= 0:
        cols.append((spec.med_col, BOTH))
    if spec.day_col >= 0:
        cols.append((spec.day_col, UPPER))
    cols += [(spec.z_col + k, BOTH) for k in range(spec.n_z)]
    cols += [(spec.new_col + k, UPPER) for k in range(spec.n_novelty)]
    return cols


def fit_profile(spec: FeatureSpec, raw: np.ndarray) -> Profile | None:
    """From raw feature rows of normal training events (per-stream columns filled); None when the
    spec has no profile column."""
    cols = profile_columns(spec)
    if not cols or len(raw) < 10:
        return None
    levels = np.linspace(0.0, 1.0, SAMPLE_POINTS)
    samples = []
    for col, _ in cols:
        v = raw[:, col]
        v = v[np.isfinite(v)]
        samples.append(np.quantile(v, levels) if len(v) else np.zeros(SAMPLE_POINTS))
    return Profile(tuple(c for c, _ in cols), tuple(s for _, s in cols), np.asarray(samples))
