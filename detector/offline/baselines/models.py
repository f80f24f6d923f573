"""The baselines behind the scorer seam (detector.core.scorer.Scorer), each fitted on normal
training events.

    det = make_baseline("copod", spec, seed=7)
    det.learn_many(train_events)                 # normal events of the model's training data
    scores = det.score_many(test_events).score   # higher = more anomalous; streams carry over
    det.save(folder); det = load_scorer(folder, spec, warmup)   # detector.offline.scorers

`iforest` (scikit-learn), `copod` and `ecod` (as PyOD defines them) work on the aggregate features
(detector.offline.baselines.aggregate), standardised on the training data; `rules` is what an
analyst writes in an afternoon, over the same features, each rule's cut and weight fitted on the
training data only; `zscore` is the rolling z-score of each numeric field against the stream's
own last ZSCORE_WINDOW values, the operations team's first try; `river-hst` is River's
HalfSpaceTrees on the same aggregate features, learning as it scores.

Saved form (no pickle): `baseline.json` (name, seed) and the training feature matrix
`training.npy` (loaded with allow_pickle=False); loading refits from them, deterministically.
The aggregate features are recomputed over each stream's history at every call: baselines are
evaluation tools, scored offline in a few large batches, not on the daemon's hot path.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from detector.core.features import FeatureSpec, ParsedEvent
from detector.core.scorer import plain_scores
from detector.core.scoring import BatchScores
from detector.exceptions import ConfigError, ModelError
from detector.offline.baselines.aggregate import aggregate_features

BASELINES = ("rules", "iforest", "copod", "ecod", "zscore", "river-hst")
# The rolling z-score's window: 48 readings (4 hours of a 5-minute series, two days of a card).
ZSCORE_WINDOW = 48
# A rule fires beyond the normal training data's 99th percentile of its feature.
RULE_QUANTILE = 0.99


BASELINE_FILE = "baseline.json"
TRAINING_FILE = "training.npy"


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"--baseline needs {module.split('.')[0]} from the 'baselines' extra: pip install 'detector[baselines]'"
        ) from None


class Baseline:
    """Learns from the aggregate features of normal events; scores each event from its stream's
    history (kept across calls, so batches score as one)."""

    independent_streams = True

    def __init__(self, name: str, spec: FeatureSpec, seed: int) -> None:
        self.name, self.spec, self.seed = name, spec, seed
        self.train_x = np.zeros((0, 0))
        self.names: list[str] = []  # the aggregate features' names (fields present in training)
        self._history: list[ParsedEvent] = []

    def learn_many(self, events: list[ParsedEvent]) -> None:
        x, names = aggregate_features(events, self.spec)
        self.fit_matrix(x, names)

    def fit_matrix(self, x: np.ndarray, names: list[str]) -> None:
        self.train_x, self.names = x, names

    def forget_streams(self) -> None:
        """Start every stream afresh (what was learned stays): a test set scored as new traffic
        after a calibration set, as offline evaluation does."""
        self._history = []

    def _features(self, events: list[ParsedEvent]) -> np.ndarray:
        """Each event's aggregate features, its stream's earlier events (of earlier calls too) in view."""
        start = len(self._history)
        self._history = self._history + list(events)
        x, _ = aggregate_features(self._history, self.spec)
        return x[start:]

    def score_many(
        self, events: list[ParsedEvent], now: float = 0.0, partitions: np.ndarray | None = None
    ) -> BatchScores:
        return plain_scores(self._score(self._features(events)))

    def _score(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / TRAINING_FILE, self.train_x, allow_pickle=False)
        meta = {"name": self.name, "seed": self.seed, "features": self.names}
        (folder / BASELINE_FILE).write_text(json.dumps(meta) + "\n")


class _Tabular(Baseline):
    """Isolation Forest (scikit-learn), COPOD or ECOD over standardised aggregate features.

    COPOD and ECOD score as PyOD defines them, with the empirical CDFs of the training data
    alone: PyOD's own decision_function ranks a batch among the training data and the batch
    together, so an event's score would depend on the other events scored with it (and the test
    set would shape its own reference). On training rows the two agree exactly (a unit test
    checks it against PyOD)."""

    def __init__(self, name: str, spec: FeatureSpec, seed: int) -> None:
        super().__init__(name, spec, seed)
        self.model: Any = None
        self.mean = self.std = np.zeros(0)
        self.sorted = np.zeros((0, 0))  # each training column, sorted (COPOD, ECOD)
        self.skew = np.zeros(0)  # each training column's skewness sign

    def fit_matrix(self, x: np.ndarray, names: list[str]) -> None:
        super().fit_matrix(x, names)
        self.mean, self.std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
        z = (x - self.mean) / self.std
        if self.name == "iforest":
            ensemble = _require("sklearn.ensemble")
            self.model = ensemble.IsolationForest(n_estimators=200, random_state=self.seed).fit(z)
        else:
            self.sorted = np.sort(z, axis=0)
            # A column constant in training has no skew (scipy: nan): both tails count alike.
            self.skew = np.nan_to_num(np.sign(_require("scipy.stats").skew(z, axis=0)), nan=0.0)

    def _score(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.std
        if self.name == "iforest":
            return np.asarray(-self.model.score_samples(z))
        return self._copula(z)

    def _copula(self, z: np.ndarray) -> np.ndarray:
        n, cols = len(self.sorted), range(z.shape[1])
        # P(X <= x) and P(X >= x) under each training column's ECDF; beyond the training range
        # the tail is 1/(n+1), just past the most extreme training value.
        below = np.stack([np.searchsorted(self.sorted[:, j], z[:, j], side="right") for j in cols], axis=1)
        above = n - np.stack([np.searchsorted(self.sorted[:, j], z[:, j], side="left") for j in cols], axis=1)
        u_l = -np.log(np.maximum(below / n, 1.0 / (n + 1)))
        u_r = -np.log(np.maximum(above / n, 1.0 / (n + 1)))
        u_skew = u_l * -np.sign(self.skew - 1) + u_r * np.sign(self.skew + 1)
        other = (u_l + u_r) / 2 if self.name == "copod" else np.maximum(u_l, u_r)
        return np.asarray(np.maximum(u_skew, other).sum(axis=1))


class Rules(Baseline):
    """Rules on the aggregate features: a value far above the stream's median or history, a
    value new for the stream (country, merchant, category), a burst (events in the last hour),
    a new country within an hour of the previous event (implausible travel). Each rule's cut is
    the training data's 99th percentile of its feature; a hit weighs -ln(how often it fires on
    normal training events), so rare rules count more; the score is the sum of the hits."""

    def __init__(self, name: str, spec: FeatureSpec, seed: int) -> None:
        super().__init__(name, spec, seed)
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

    def fit_matrix(self, x: np.ndarray, names: list[str]) -> None:
        super().fit_matrix(x, names)
        self.rules = []
        for name, f in self._rules(self.names):
            v = f(x)
            cut = max(float(np.quantile(v, RULE_QUANTILE)), 0.0)
            rate = (np.sum(v > cut) + 1.0) / (len(v) + 2.0)
            self.rules.append((name, f, cut, -float(np.log(rate))))

    def _score(self, x: np.ndarray) -> np.ndarray:
        s = np.zeros(len(x))
        for _, f, cut, weight in self.rules:
            v = f(x)
            s += weight * (v > cut) + 1e-3 * np.tanh(v - cut)  # ties broken by how far past the cut
        return s


class RollingZ(Baseline):
    """max over numeric fields of |value - mean| / sd over the stream's last ZSCORE_WINDOW values."""

    def __init__(self, name: str, spec: FeatureSpec, seed: int) -> None:
        super().__init__(name, spec, seed)
        self._windows: dict[str, deque[tuple[float, ...]]] = {}

    def learn_many(self, events: list[ParsedEvent]) -> None:
        return None  # nothing to learn: each stream is its own reference

    def forget_streams(self) -> None:
        self._windows = {}

    def score_many(
        self, events: list[ParsedEvent], now: float = 0.0, partitions: np.ndarray | None = None
    ) -> BatchScores:
        hist = self._windows
        out = np.zeros(len(events))
        for i, e in enumerate(events):
            h = hist.setdefault(e.stream_id, deque(maxlen=ZSCORE_WINDOW))
            if len(h) >= 3:
                a = np.asarray(h)
                sd = np.maximum(a.std(axis=0), 1e-9 + 1e-3 * np.abs(a.mean(axis=0)))
                out[i] = float(np.max(np.abs(np.asarray(e.numeric) - a.mean(axis=0)) / sd))
            h.append(e.numeric)
        return plain_scores(out)


class RiverHst(Baseline):
    """River's HalfSpaceTrees on the aggregate features squashed into [0, 1] with the training
    statistics; it scores, then learns, each event in order (warmed up on the training events)."""

    # One model learns from every stream as it scores: a stream's scores depend on the others.
    independent_streams = False

    def __init__(self, name: str, spec: FeatureSpec, seed: int) -> None:
        super().__init__(name, spec, seed)
        self.hst: Any = None
        self.mean = self.std = np.zeros(0)

    def _u(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-(x - self.mean) / self.std)))

    def fit_matrix(self, x: np.ndarray, names: list[str]) -> None:
        super().fit_matrix(x, names)
        anomaly = _require("river.anomaly")
        self.mean, self.std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
        self.hst = anomaly.HalfSpaceTrees(seed=self.seed)
        for row in self._u(x).tolist():
            self.hst.learn_one(dict(enumerate(row)))

    def _score(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        for i, row in enumerate(self._u(x).tolist()):
            one = dict(enumerate(row))
            out[i] = self.hst.score_one(one)
            self.hst.learn_one(one)
        return out


def make_baseline(name: str, spec: FeatureSpec, seed: int) -> Baseline:
    if name in ("iforest", "copod", "ecod"):
        return _Tabular(name, spec, seed)
    kinds: dict[str, type[Baseline]] = {"rules": Rules, "zscore": RollingZ, "river-hst": RiverHst}
    if name not in kinds:
        raise ConfigError(f"--baseline: unknown baseline {name!r} (choose from {', '.join(BASELINES)})")
    return kinds[name](name, spec, seed)


def load_baseline(folder: Path, meta: dict[str, Any], spec: FeatureSpec) -> Baseline:
    """A saved baseline, refitted from its training matrix (same seed: the same model)."""
    try:
        det = make_baseline(str(meta["name"]), spec, int(meta["seed"]))
        x = np.load(folder / TRAINING_FILE, allow_pickle=False)
        names = [str(n) for n in meta["features"]]
    except (KeyError, TypeError, ValueError, OSError, ConfigError) as exc:
        raise ModelError(f"{folder}: not a saved baseline ({exc})") from None
    if len(x):
        det.fit_matrix(x, names)
    return det
