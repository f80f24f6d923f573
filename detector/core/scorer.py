"""The one seam every detector sits behind: the LSTM, and each baseline (river's `learn_one` /
`score_one` idea, batched), the one factory of LSTM scorers, and the one alert rule.

    scorer = lstm_scorer(weights, norm, spec, window=16, warmup=3, max_streams=100_000)
    scorer.learn_many(normal_events)                 # a baseline fits; the LSTM was trained offline
    out = scorer.score_many(events, now=time.time()) # BatchScores; each stream's state carries over
    hits = is_alert(out.score, out.warming, threshold)

Contract (tests/unit/test_scorer_contract.py runs it over every implementation): the same seed
gives the same scores; a saved and loaded scorer gives the same scores; input events are not
mutated; scoring in several batches gives the scores of one; and, where `independent_streams`,
interleaving other streams does not change a stream's scores.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from detector.core.evidence import Evidence
from detector.core.features import FeatureSpec, ParsedEvent
from detector.core.scoring import BatchScores, LstmWeights, Normalizer, StreamingScorer, table_for


class Scorer(Protocol):
    # False for a detector that learns one model from every stream's events as it scores (a
    # stream's scores then depend on the others by design).
    independent_streams: bool

    def learn_many(self, events: list[ParsedEvent]) -> None: ...

    def score_many(
        self, events: list[ParsedEvent], now: float = 0.0, partitions: np.ndarray | None = None
    ) -> BatchScores: ...


def is_alert(score: np.ndarray, warming: np.ndarray, limit: np.ndarray | float) -> np.ndarray:
    """The alert rule, everywhere (daemon, offline scoring, calibration, bench, baselines): above
    the threshold in force, and past the stream's warm-up."""
    return (score > limit) & ~warming


def plain_scores(score: np.ndarray, warming: np.ndarray | None = None) -> BatchScores:
    """BatchScores of a scorer with no per-feature detail (a baseline)."""
    n = len(score)
    none = np.zeros((n, 0), np.float32)
    warm = np.zeros(n, bool) if warming is None else warming
    return BatchScores(np.asarray(score, np.float64), warm, none, none, none, np.zeros(n, np.int64), score)


def lstm_scorer(
    weights: LstmWeights,
    norm: Normalizer,
    spec: FeatureSpec,
    window: int,
    warmup: int,
    max_streams: int,
    prediction_weight: float = 0.5,
    idle_ttl_seconds: float = float("inf"),
    explain_above: float = -np.inf,
    error_weights: np.ndarray | None = None,
    evidence: Evidence | None = None,
    keep_residuals: bool = False,
) -> StreamingScorer:
    """Every LSTM scorer is built here, on a fresh stream table of `max_streams` streams."""
    table = table_for(spec, max(max_streams, 1), weights.state_size, window, idle_ttl_seconds)
    return StreamingScorer(
        weights,
        norm,
        spec,
        table,
        window,
        warmup,
        prediction_weight,
        explain_above=explain_above,
        error_weights=error_weights,
        evidence=evidence,
        keep_residuals=keep_residuals,
    )
