"""River's HalfSpaceTrees on the same feature vectors, for `detector evaluate --baseline river-hst`.

    scores = river_hst_scores(spec, norm, events, seed=7)

One global model (River's detectors keep no per-stream state), `score_one` then `learn_one` per
event in file order, features normalised with the LSTM model's statistics and squashed into
[0, 1] (the range HalfSpaceTrees expects).
"""

from __future__ import annotations

import numpy as np

from detector.dataset import featurize
from detector.exceptions import DetectorError
from detector.features import FeatureSpec, ParsedEvent
from detector.scoring import Normalizer


def river_hst_scores(spec: FeatureSpec, norm: Normalizer, events: list[ParsedEvent], seed: int) -> np.ndarray:
    try:
        from river.anomaly import HalfSpaceTrees
    except ImportError:
        raise DetectorError("--baseline river-hst needs River: pip install '.[baselines]'") from None
    u = 1.0 / (1.0 + np.exp(-norm.apply(featurize(spec, events))))
    hst = HalfSpaceTrees(seed=seed)
    out = np.empty(len(events))
    for i, row in enumerate(u.tolist()):
        x = dict(enumerate(row))
        out[i] = hst.score_one(x)
        hst.learn_one(x)
    return out
