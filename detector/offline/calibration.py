"""The alert threshold of a trained model, by the method its calibration data supports.

th, drift = calibrate_threshold(weights, norm, spec, settings, events, counted, error_weights, evidence, seed)
th.method    # "quantile", "pot", "null-simulation" or "likelihood (normal tail)"
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detector.config import Settings
from detector.core.drift import reference
from detector.core.evidence import Evidence
from detector.core.features import FeatureSpec
from detector.core.scorer import lstm_scorer
from detector.core.scoring import LstmWeights, Normalizer
from detector.core.threshold import Threshold, threshold_for
from detector.offline.dataset import featurize, score_events, stream_count


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
) -> tuple[Threshold, dict[str, Any]]:
    """Score the held-out calibration events as the daemon would; the threshold for the target
    false-alarm rate is then chosen by `detector.core.threshold.threshold_for`. Also the
    calibration set's score and feature bins, the reference of live drift (detector.core.drift)."""
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
    threshold = threshold_for(
        scores,
        mc.target_false_alarm_rate,
        mc.threshold_method,
        mc.critical_multiplier,
        evidence,
        lambda: _elapsed_by_stream(events, keep),
        seed,
    )
    return threshold, reference(scores, featurize(spec, events)[keep], spec.names)


def _elapsed_by_stream(events: list[Any], keep: np.ndarray) -> list[np.ndarray]:
    """Per stream, the seconds between its counted calibration events (the first: a huge gap)."""
    by: dict[str, list[float]] = {}
    for e, k in zip(events, keep, strict=True):
        if k:
            by.setdefault(e.stream_id, []).append(e.ts)
    return [np.diff(np.asarray(t), prepend=-np.inf) for t in by.values()]
