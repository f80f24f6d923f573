"""The baselines, each fitted on normal training events and scoring test events.

    det = make_baseline("copod", seed=7)
    det.fit(train_events, spec)              # normal events of the model's training data
    scores = det.score(test_events, spec)    # higher = more anomalous

`iforest` (scikit-learn), `copod` and `ecod` (PyOD) work on the aggregate features
(detector.baselines.aggregate), standardised on the training data; `rules` is what an analyst
writes in an afternoon, over the same features, each rule's cut and weight fitted on the
training data only; `zscore` is the rolling z-score of each numeric field against the stream's
own last ZSCORE_WINDOW values, the operations team's first try; `river-hst` is River's
HalfSpaceTrees on the same aggregate features, learning as it scores.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import numpy as np

from detector.baselines.aggregate import aggregate_features
from detector.exceptions import ConfigError
from detector.features import FeatureSpec, ParsedEvent

BASELINES = ("rules", "iforest", "copod", "ecod", "zscore", "river-hst")
# The rolling z-score's window: 48 readings (4 hours of a 5-minute series, two days of a card).
ZSCORE_WINDOW = 48
# A rule fires beyond the normal training data's 99th percentile of its feature.
RULE_QUANTILE = 0.99


class Baseline(Protocol):
    def fit(self, events: list[ParsedEvent], spec: FeatureSpec) -> None: ...

    def score(self, events: list[ParsedEvent], spec: FeatureSpec) -> np.ndarray: ...


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"--baseline needs {module.split('.')[0]} from the 'baselines' extra: pip install 'detector[baselines]'"
        ) from None


class _Tabular:
    """A PyOD or scikit-learn detector over standardised aggregate features."""

    def __init__(self, name: str, seed: int) -> None:
        self.name, self.seed = name, seed
        self.model: Any = None
        self.mean = self.std = np.zeros(0)

    def _x(self, events: list[ParsedEvent], spec: FeatureSpec) -> np.ndarray:
        x, _ = aggregate_features(events, spec)
        return x

    def fit(self, events: list[ParsedEvent], spec: FeatureSpec) -> None:
        x = self._x(events, spec)
        self.mean, self.std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
        z = (x - self.mean) / self.std
        if self.name == "iforest":
            ensemble = _require("sklearn.ensemble")
            self.model = ensemble.IsolationForest(n_estimators=200, random_state=self.seed).fit(z)
        elif self.name == "copod":
            self.model = _require("pyod.models.copod").COPOD().fit(z)
        else:
            self.model = _require("pyod.models.ecod").ECOD().fit(z)

    def score(self, events: list[ParsedEvent], spec: FeatureSpec) -> np.ndarray:
        z = (self._x(events, spec) - self.mean) / self.std
        if self.name == "iforest":
            return np.asarray(-self.model.score_samples(z))
        return np.asarray(self.model.decision_function(z))


class Rules:
    """Rules on the aggregate features: a value far above the stream's median or history, a
    value new for the stream (country, merchant, category), a burst (events in the last hour),
    a new country within an hour of the previous event (implausible travel). Each rule's cut is
    the training data's 99th percentile of its feature; a hit weighs -ln(how often it fires on
    normal training events), so rare rules count more; the score is the sum of the hits."""

    def __init__(self) -> None:
        self.rules: list[tuple[str, Any, float, float]] = []

    def _rules(self, names: list[str]) -> list[tuple[str, Any]]:
        col = {n: i for i, n in enumerate(names)}
        out: list[tuple[str, Any]] = []
        for n in names:
            if n.endswith("_vs_median") or n.endswith("_z") or n == "events_1h":
                out.append((n, lambda x, c=col[n]: x[:, c]))
            elif n.endswith("_is_new"):
                out.append((n, lambda x, c=col[n]: x[:, c] - 0.5))
        if "country_is_new" in col:
            c, d = col["country_is_new"], col["log_seconds_since_previous"]
            out.append(("implausible_travel", lambda x: x[:, c] * (np.log1p(3600) - x[:, d])))
        return out

    def fit(self, events: list[ParsedEvent], spec: FeatureSpec) -> None:
        x, names = aggregate_features(events, spec)
        self.rules = []
        for name, f in self._rules(names):
            v = f(x)
            cut = max(float(np.quantile(v, RULE_QUANTILE)), 0.0)
            rate = (np.sum(v > cut) + 1.0) / (len(v) + 2.0)
            self.rules.append((name, f, cut, -float(np.log(rate))))

    def score(self, events: list[ParsedEvent], spec: FeatureSpec) -> np.ndarray:
        x, _ = aggregate_features(events, spec)
        s = np.zeros(len(x))
        for _, f, cut, weight in self.rules:
            v = f(x)
            s += weight * (v > cut) + 1e-3 * np.tanh(v - cut)  # ties broken by how far past the cut
        return s


class RollingZ:
    """max over numeric fields of |value - mean| / sd over the stream's last ZSCORE_WINDOW values."""

    def fit(self, events: list[ParsedEvent], spec: FeatureSpec) -> None:
        return None

    def score(self, events: list[ParsedEvent], spec: FeatureSpec) -> np.ndarray:
        hist: dict[str, deque[tuple[float, ...]]] = {}
        out = np.zeros(len(events))
        for i, e in enumerate(events):
            h = hist.setdefault(e.stream_id, deque(maxlen=ZSCORE_WINDOW))
            if len(h) >= 3:
                a = np.asarray(h)
                sd = np.maximum(a.std(axis=0), 1e-9 + 1e-3 * np.abs(a.mean(axis=0)))
                out[i] = float(np.max(np.abs(np.asarray(e.numeric) - a.mean(axis=0)) / sd))
            h.append(e.numeric)
        return out


class RiverHst:
    """River's HalfSpaceTrees on the aggregate features squashed into [0, 1] with the training
    statistics; it scores, then learns, each event in order (warmed up on the training events)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.hst: Any = None
        self.mean = self.std = np.zeros(0)

    def _u(self, events: list[ParsedEvent], spec: FeatureSpec) -> np.ndarray:
        x, _ = aggregate_features(events, spec)
        return np.asarray(1.0 / (1.0 + np.exp(-(x - self.mean) / self.std)))

    def fit(self, events: list[ParsedEvent], spec: FeatureSpec) -> None:
        anomaly = _require("river.anomaly")
        x, _ = aggregate_features(events, spec)
        self.mean, self.std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
        self.hst = anomaly.HalfSpaceTrees(seed=self.seed)
        for row in self._u(events, spec).tolist():
            self.hst.learn_one(dict(enumerate(row)))

    def score(self, events: list[ParsedEvent], spec: FeatureSpec) -> np.ndarray:
        out = np.empty(len(events))
        for i, row in enumerate(self._u(events, spec).tolist()):
            x = dict(enumerate(row))
            out[i] = self.hst.score_one(x)
            self.hst.learn_one(x)
        return out


def make_baseline(name: str, seed: int) -> Baseline:
    if name in ("iforest", "copod", "ecod"):
        return _Tabular(name, seed)
    if name == "rules":
        return Rules()
    if name == "zscore":
        return RollingZ()
    if name == "river-hst":
        return RiverHst(seed)
    raise ConfigError(f"--baseline: unknown baseline {name!r} (choose from {', '.join(BASELINES)})")
