"""The alert threshold of a trained model, by the method its calibration data supports.

th = calibrate_threshold(weights, norm, spec, settings, events, counted, error_weights, evidence, seed)
th.method    # "quantile", "pot", "null-simulation" or "likelihood (normal tail)"
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detector.config import Settings
from detector.core.evidence import Evidence
from detector.core.features import FeatureSpec
from detector.core.scorer import lstm_scorer
from detector.core.scoring import LstmWeights, Normalizer
from detector.core.surprise import null_evidence_quantile
from detector.core.threshold import Threshold, calibrate
from detector.exceptions import DataError
from detector.offline.dataset import score_events, stream_count


def calibrate_threshold(
    weights: LstmWeights,
    norm: Normalizer,
    spec: FeatureSpec,
    settings: Settings,
    events: list[Any],
    counted: np.ndarray,
    error_weights: np.ndarray | None,
    evidence: Evidence | None,
    seed: int,
) -> Threshold:
    """The threshold for the target false-alarm rate, by the method the calibration size supports:
    the empirical quantile with at least 10 / rate events; peaks-over-threshold with at least
    POT_MIN_EVENTS; below that, with calibrated evidence, the quantile of the evidence that
    calibrated surprises would build up over the calibration streams' own spacing (simulated);
    otherwise refused (DataError, one line)."""
    mc = settings.model
    scorer = lstm_scorer(
        weights,
        norm,
        spec,
        mc.window,
        mc.warmup_events,
        stream_count(events),
        mc.prediction_weight,
        error_weights=error_weights,
        evidence=evidence,
    )
    r = score_events(events, scorer, threshold=np.inf)
    keep = counted & ~r.warming
    scores = r.score[keep]
    rate = mc.target_false_alarm_rate
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
        return calibrate(scores, rate, "quantile", mc.critical_multiplier)
    if n >= POT_MIN_EVENTS and mc.threshold_method == "pot":
        th = calibrate(scores, rate, "pot", mc.critical_multiplier)
        if th.method == "pot":
            return th
    if evidence is None:
        raise DataError(
            f"model.target_false_alarm_rate {rate:g} cannot be supported by {n} calibration events without evidence "
            f"(model.evidence_seconds 0): the empirical quantile needs {int(np.ceil(10 / rate))} events"
        )
    stream_elapsed = _elapsed_by_stream(events, keep)
    value = null_evidence_quantile(stream_elapsed, evidence.tau, evidence.per_event, evidence.allowance, rate, seed)
    crit = null_evidence_quantile(stream_elapsed, evidence.tau, evidence.per_event, evidence.allowance, rate / 10, seed)
    return Threshold(value, max(crit, value), "null-simulation", rate, n)


# Below this many calibration events, no threshold (every method would rest on a handful of points).
MIN_CALIBRATION_EVENTS = 20
# Peaks-over-threshold needs about 30 excesses over the 98th percentile.
POT_MIN_EVENTS = 1500


def _elapsed_by_stream(events: list[Any], keep: np.ndarray) -> list[np.ndarray]:
    """Per stream, the seconds between its counted calibration events (the first: a huge gap)."""
    by: dict[str, list[float]] = {}
    for e, k in zip(events, keep, strict=True):
        if k:
            by.setdefault(e.stream_id, []).append(e.ts)
    return [np.diff(np.asarray(t), prepend=-np.inf) for t in by.values()]
