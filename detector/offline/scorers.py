"""Scorers from what is on disk: a trained model folder, or a baseline by name.

    scorer = artifact_scorer(art, spec, warmup=3, max_streams=100_000, explain=True)   # the daemon's
    scorer = load_scorer(Path("models/default"), spec, warmup=3)      # a model or a saved baseline
    base = make_baseline("copod", spec, seed=7); base.learn_many(train); base.save(folder)

Every LSTM scorer comes from `detector.core.scorer.lstm_scorer`; this module only reads the
artifact's parts into it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detector.core.features import FeatureSpec
from detector.core.scorer import Scorer, lstm_scorer
from detector.core.scoring import StreamingScorer
from detector.exceptions import ModelError
from detector.offline.baselines.models import BASELINE_FILE, load_baseline
from detector.offline.model import Artifact, load_artifact


def artifact_scorer(
    art: Artifact,
    spec: FeatureSpec,
    warmup: int,
    max_streams: int,
    idle_ttl_seconds: float = float("inf"),
    explain: bool = True,
) -> StreamingScorer:
    """The model of `art` on a fresh table. `spec` is bound to the model's embeddings here;
    with `explain`, events above the threshold get per-feature errors (alert explanations)."""
    return lstm_scorer(
        art.weights,
        art.norm,
        art.bind(spec),
        art.window,
        warmup,
        max_streams,
        art.prediction_weight,
        idle_ttl_seconds=idle_ttl_seconds,
        explain_above=art.threshold.value if explain else np.inf,
        error_weights=art.error_weights,
        evidence=art.evidence,
    )


def load_scorer(folder: Path, spec: FeatureSpec, warmup: int, max_streams: int = 100_000) -> Scorer:
    """The scorer saved in `folder`: a model trained by `detector train`, or a baseline's `save`."""
    folder = Path(folder)
    if (folder / BASELINE_FILE).is_file():
        try:
            meta = json.loads((folder / BASELINE_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{folder / BASELINE_FILE}: unreadable ({exc})") from None
        return load_baseline(folder, meta, spec)
    return artifact_scorer(load_artifact(folder, spec), spec, warmup, max_streams)
