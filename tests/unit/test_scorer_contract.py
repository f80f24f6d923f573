"""The scorer contract (detector.core.scorer), run over every implementation: the LSTM model and
each baseline. Training the LSTM twice with one seed gives one model: test_model.py checks that
(it takes a training run); here the same saved model, loaded twice, must score alike.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.config import Settings
from detector.core.features import FeatureSpec, ParsedEvent
from detector.core.scorer import Scorer
from detector.offline.baselines.models import BASELINES, make_baseline
from detector.offline.dataset import load_events
from detector.offline.scorers import load_scorer

KINDS = ("lstm", *BASELINES)
WARMUP = 3
SEED = 7


@pytest.fixture(scope="module")
def spec(small_settings: Settings) -> FeatureSpec:
    return FeatureSpec(small_settings.features)


@pytest.fixture(scope="module")
def train(train_file: Path, spec: FeatureSpec) -> list[ParsedEvent]:
    return [e for e in load_events(train_file, spec).events[:2500] if e.record.get("label", 0) == 0]


@pytest.fixture(scope="module")
def test(test_file: Path, spec: FeatureSpec) -> list[ParsedEvent]:
    return load_events(test_file, spec).events[:800]


def build(kind: str, spec: FeatureSpec, train: list[ParsedEvent], model_dir: Path, seed: int = SEED) -> Scorer:
    if kind == "lstm":
        return load_scorer(model_dir, spec, WARMUP)
    det = make_baseline(kind, spec, seed)
    det.learn_many(train)
    return det


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float32 rounding (BLAS sums in another order for another batch size)."""
    scale = max(float(np.median(np.abs(a))), 1e-6)
    return a.shape == b.shape and bool(np.max(np.abs(a - b), initial=0.0) / scale <= 1e-5)


def snapshot(events: list[ParsedEvent]) -> list[Any]:
    return [(e.stream_id, e.event_id, e.ts, e.numeric, e.buckets, copy.deepcopy(e.record)) for e in events]


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_scores(kind: str, spec: FeatureSpec, train: list, test: list, model_dir: Path) -> None:
    a = build(kind, spec, train, model_dir).score_many(test).score
    b = build(kind, spec, train, model_dir).score_many(test).score
    assert np.array_equal(a, b) and np.isfinite(a).all()


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_give_the_same_scores(
    kind: str, spec: FeatureSpec, train: list, test: list, model_dir: Path, tmp_path: Path
) -> None:
    scorer = build(kind, spec, train, model_dir)
    if kind == "lstm":  # the model folder is its saved form
        shutil.copytree(model_dir, tmp_path / "copy")
    else:
        scorer.save(tmp_path / "copy")  # type: ignore[attr-defined]
    loaded = load_scorer(tmp_path / "copy", spec, WARMUP)
    assert type(loaded) is type(scorer)
    assert close(scorer.score_many(test).score, loaded.score_many(test).score)


@pytest.mark.parametrize("kind", KINDS)
def test_input_is_not_mutated(kind: str, spec: FeatureSpec, train: list, test: list, model_dir: Path) -> None:
    before, before_train = snapshot(test), snapshot(train[:500])
    scorer = build(kind, spec, train, model_dir)
    scorer.score_many(test)
    assert snapshot(test) == before and snapshot(train[:500]) == before_train


@pytest.mark.parametrize("kind", KINDS)
def test_batches_score_as_one(kind: str, spec: FeatureSpec, train: list, test: list, model_dir: Path) -> None:
    whole = build(kind, spec, train, model_dir).score_many(test).score
    scorer = build(kind, spec, train, model_dir)
    parts = [scorer.score_many(test[a:b]).score for a, b in ((0, 1), (1, 250), (250, 251), (251, len(test)))]
    assert close(whole, np.concatenate(parts))


@pytest.mark.parametrize("kind", KINDS)
def test_interleaving_streams_does_not_change_a_streams_scores(
    kind: str, spec: FeatureSpec, train: list, test: list, model_dir: Path
) -> None:
    scorer = build(kind, spec, train, model_dir)
    if not scorer.independent_streams:
        # A global online learner (river's HalfSpaceTrees) is declared so; see the next test.
        assert kind == "river-hst"
        return
    counts: dict[str, int] = {}
    for e in test:
        counts[e.stream_id] = counts.get(e.stream_id, 0) + 1
    busiest = max(sorted(counts), key=lambda s: counts[s])
    mine = [e for e in test if e.stream_id == busiest]
    assert len(mine) >= 10 and len(mine) < len(test)
    alone = build(kind, spec, train, model_dir).score_many(mine).score
    mixed = scorer.score_many(test).score
    assert close(alone, mixed[[i for i, e in enumerate(test) if e.stream_id == busiest]])


def test_only_a_global_online_learner_declares_dependent_streams(
    spec: FeatureSpec, train: list, model_dir: Path
) -> None:
    dependent = {k for k in KINDS if not build(k, spec, train[:300], model_dir).independent_streams}
    assert dependent == {"river-hst"}


@pytest.mark.parametrize("kind", ["copod", "ecod"])
def test_copula_baselines_score_training_rows_as_pyod_does(kind: str, spec: FeatureSpec, train: list) -> None:
    """Our COPOD and ECOD use the training ECDFs only (PyOD ranks a scored batch with the training
    data); on the training rows themselves both definitions coincide."""
    from pyod.models.copod import COPOD
    from pyod.models.ecod import ECOD

    from detector.offline.baselines.aggregate import aggregate_features

    x, names = aggregate_features(train, spec)
    keep = np.flatnonzero(x.std(axis=0) > 0)  # a constant column has no skew: PyOD's scores are nan there
    det = make_baseline(kind, spec, SEED)
    det.fit_matrix(x[:, keep], [names[k] for k in keep])  # type: ignore[attr-defined]
    z = (x[:, keep] - det.mean) / det.std  # type: ignore[attr-defined]
    ref = (COPOD() if kind == "copod" else ECOD()).fit(z).decision_scores_
    assert np.allclose(det._score(x[:, keep]), ref, rtol=1e-9, atol=1e-9)  # type: ignore[attr-defined]
