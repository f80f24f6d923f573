"""An alert budget: the threshold rises when live traffic would alert more than analysts can read.

    budget = AlertBudget(calibrated=th.value, per_10k=2.0)
    limits = budget.thresholds(scores)     # (n,) the effective threshold of each event, >= calibrated
    budget.effective                       # the current one (the detector_effective_threshold gauge)

The budget keeps a decayed histogram of the live, non-warming scores (log-spaced bins) and, every
STEP events counted from the start, sets the effective threshold to the larger of the calibrated
one and the live score quantile at 1 - per_10k / 10,000 (the running maximum until the histogram
holds 10,000 / per_10k events). It never goes below the calibrated
threshold; it rises on a shifted stream (another currency, a new season) that the calibration did
not know. Because the update points are fixed event counts, not batches, any batching gives the
same thresholds: offline scoring equals the daemon's.
"""

from __future__ import annotations

import numpy as np

# Update the effective threshold every 256 scored events: a fraction of a second of live traffic.
STEP = 256
# The histogram forgets with this horizon (events): a day of a mid-size card issuer's traffic at
# a few events per second; long enough to hold a 2-in-10,000 quantile (40 events above it).
HORIZON = 200_000
# Bins: 64 per decade of score from 1e-3 to 1e7.
_EDGES = np.logspace(-3, 7, 641)


class AlertBudget:
    def __init__(self, calibrated: float, per_10k: float, horizon: int = HORIZON) -> None:
        self.calibrated = float(calibrated)
        self.rate = per_10k / 1e4
        self.decay = float(np.exp(-STEP / horizon))
        self.hist = np.zeros(len(_EDGES) + 1)
        self.seen = 0  # scored events so far
        self.effective = self.calibrated

    def _update(self) -> None:
        mass = self.hist.sum()
        if mass < 1.0:
            return
        # Before the histogram holds 1 / rate events, the quantile is its top one (a new record
        # alerts): the budget holds from the first events of a shifted stream, not only once the
        # histogram has filled (1,500 events of a flood alerted during that warm-up, measured).
        share = max(self.rate, 1.0 / mass)
        above = np.cumsum(self.hist[::-1])[::-1]  # mass at or above each bin
        k = int(np.searchsorted(-above, -share * mass))  # first bin with less than the budget above
        q = float(_EDGES[min(max(k - 1, 0), len(_EDGES) - 1)])
        self.effective = max(self.calibrated, q)

    def thresholds(self, scores: np.ndarray, warming: np.ndarray | None = None) -> np.ndarray:
        """Each event's effective threshold; then the events are counted into the histogram."""
        out = np.empty(len(scores))
        counted = np.ones(len(scores), bool) if warming is None else ~warming
        i = 0
        while i < len(scores):
            j = min(len(scores), i + STEP - self.seen % STEP)
            out[i:j] = self.effective
            live = scores[i:j][counted[i:j]]
            self.hist += np.bincount(np.searchsorted(_EDGES, live), minlength=len(self.hist))
            self.seen += j - i
            if self.seen % STEP == 0:
                self.hist *= self.decay
                self._update()
            i = j
        return out


def budget_for(calibrated: float, per_10k: float | None) -> AlertBudget | None:
    """The budget of `alerts.budget_per_10k` (None: off)."""
    return None if per_10k is None else AlertBudget(calibrated, per_10k)
