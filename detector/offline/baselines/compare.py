"""Fit a baseline like the model, threshold it at the model's target rate, compare with intervals.

    rep = baseline_report("copod", spec, train_events, test_events, labels, ..., rate=1e-4, seed=7)
    lo, hi = paired_bootstrap(labels, lstm_scores, base_scores, streams, seed=7)

The baseline is fitted on 80% of the normal training streams and its threshold calibrated on the
other 20% (peaks-over-threshold, the empirical quantile where the fit is rejected), as the
model holds out streams for its own threshold. The paired bootstrap resamples whole streams
(events of one stream are not independent) and recomputes both PR-AUCs on each resample: a
difference whose 95% interval straddles 0 is a tie.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detector.core.features import FeatureSpec, ParsedEvent
from detector.core.scorer import is_alert
from detector.core.threshold import calibrate
from detector.offline.baselines.models import make_baseline
from detector.offline.measures import average_precision, evaluate

BOOTSTRAP_RESAMPLES = 200


def baseline_scores(
    name: str, spec: FeatureSpec, train: list[ParsedEvent], test: list[ParsedEvent], rate: float, seed: int
) -> tuple[np.ndarray, float, str]:
    """(test scores, threshold, threshold method) of a baseline fitted on normal `train` events."""
    ids = sorted({e.stream_id for e in train})
    perm = np.random.default_rng(seed).permutation(len(ids))
    if len(ids) >= 5:
        held = {ids[i] for i in perm[: max(1, len(ids) // 5)]}
        fit = [e for e in train if e.stream_id not in held]
        cal = [e for e in train if e.stream_id in held]
    else:  # one or a few series: the later 20% of each calibrates
        cut = {s: np.quantile([e.ts for e in train if e.stream_id == s], 0.8) for s in ids}
        fit = [e for e in train if e.ts <= cut[e.stream_id]]
        cal = [e for e in train if e.ts > cut[e.stream_id]]
    det = make_baseline(name, spec, seed)
    det.learn_many(fit)
    th = calibrate(det.score_many(cal if name != "zscore" else train).score, rate, "pot")
    det.forget_streams()
    return det.score_many(test).score, th.value, th.method


def baseline_report(
    name: str,
    spec: FeatureSpec,
    train: list[ParsedEvent],
    test: list[ParsedEvent],
    labels: np.ndarray,
    incidents: list[Any],
    streams: list[str],
    ts: np.ndarray,
    rate: float,
    seed: int,
) -> tuple[dict[str, Any], np.ndarray]:
    scores, th, method = baseline_scores(name, spec, train, test, rate, seed)
    rep = evaluate(scores, is_alert(scores, np.zeros(len(scores), bool), th), labels, incidents, streams, ts)
    return {"name": name, "threshold": th, "threshold_method": method, **rep}, scores


def paired_bootstrap(
    labels: np.ndarray, a: np.ndarray, b: np.ndarray, streams: list[str], seed: int, n: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float, float]:
    """PR-AUC(a) - PR-AUC(b) and its 95% interval, resampling whole streams."""
    ids, inv = np.unique(np.asarray(streams), return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(len(ids) + 1))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        pick = rng.integers(0, len(ids), len(ids))
        rows = np.concatenate([order[bounds[k] : bounds[k + 1]] for k in pick])
        la = labels[rows]
        if la.sum() == 0:
            continue
        diffs.append(average_precision(a[rows], la) - average_precision(b[rows], la))
    d = average_precision(a, labels) - average_precision(b, labels)
    lo, hi = np.quantile(diffs, [0.025, 0.975]) if diffs else (np.nan, np.nan)
    return float(d), float(lo), float(hi)
