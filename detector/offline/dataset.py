"""Offline data: read a JSONL file of events, validate them, and featurise each stream in order
with the same `FeatureSpec.derive` the streaming scorer uses.

    ds = load_events("cards.jsonl", spec)
    raw = featurize(spec, ds.events)       # (n, F) raw features, per-stream columns filled
    seqs = ds.streams()                      # stream id -> row indices in time order
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.core.budget import AlertBudget
from detector.core.explain import Explainer
from detector.core.features import FeatureSpec, ParsedEvent
from detector.core.scorer import Scorer, is_alert
from detector.core.scoring import _rounds
from detector.exceptions import DataError, InvalidEvent
from detector.jsonl import read_jsonl


@dataclass
class Dataset:
    events: list[ParsedEvent]
    invalid: dict[str, int] = field(default_factory=dict)

    def labels(self, key: str = "label") -> np.ndarray | None:
        vals = [e.record.get(key) for e in self.events]
        if any(v is None for v in vals):
            return None
        return np.array(vals, dtype=np.int64)

    def field(self, key: str) -> list[Any]:
        return [e.record.get(key) for e in self.events]

    def streams(self) -> dict[str, np.ndarray]:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, e in enumerate(self.events):
            groups[e.stream_id].append(i)
        return {k: np.array(v, dtype=np.int64) for k, v in groups.items()}

    def skipped(self) -> str:
        """The invalid events by reason, for messages: '3 invalid: 2 missing_field, 1 undecodable'."""
        n = sum(self.invalid.values())
        if not n:
            return "no invalid lines"
        return f"{n} invalid: " + ", ".join(f"{v} {k}" for k, v in sorted(self.invalid.items(), key=lambda kv: -kv[1]))


def load_events(path: str | Path, spec: FeatureSpec, max_bytes: int = 1 << 20) -> Dataset:
    """The valid events of a JSONL file, in file order; invalid ones are counted by reason.
    A file without one valid event is a DataError naming the file and what was skipped."""
    ds = Dataset([])
    for raw in read_jsonl(path):
        try:
            ds.events.append(spec.parse(raw, max_bytes))
        except InvalidEvent as exc:
            ds.invalid[exc.reason] = ds.invalid.get(exc.reason, 0) + 1
    if not ds.events:
        raise DataError(f"{path}: 0 usable events ({ds.skipped()}); need at least 1")
    return ds


def featurize(spec: FeatureSpec, events: list[ParsedEvent]) -> np.ndarray:
    """Raw features of every event, per-stream columns computed in each stream's order."""
    x = spec.base_matrix(events)
    ts = np.array([e.ts for e in events], dtype=np.float64)
    ids: dict[str, int] = {}
    slots = np.array([ids.setdefault(e.stream_id, len(ids)) for e in events], dtype=np.int64)
    state = spec.fresh_state(len(ids))
    seen = np.zeros(len(ids), dtype=bool)
    marks = spec.marks(events)
    for rows in _rounds(slots):
        s = slots[rows]
        xr = x[rows]
        new = spec.derive(xr, ts[rows], {k: v[s] for k, v in state.items()}, seen[s], marks[rows])
        for k, v in new.items():
            state[k][s] = v
        x[rows] = xr
        seen[s] = True
    return x


@dataclass
class Scored:
    score: np.ndarray
    warming: np.ndarray
    alert: np.ndarray
    limit: np.ndarray  # the threshold applied to each event (the budget's, when one is set)
    driver: np.ndarray | None = None  # the part that drove each event's surprise, with evidence
    # Row -> the alert's top features (detector.core.explain), when an explainer was given.
    top_features: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


def stream_count(events: list[ParsedEvent]) -> int:
    """A stream table of this size holds every stream of `events` without evicting."""
    return max(len({e.stream_id for e in events}), 1)


def score_events(
    events: list[ParsedEvent],
    scorer: Scorer,
    threshold: float,
    explainer: Explainer | None = None,
    budget: AlertBudget | None = None,
    batch: int = 4096,
) -> Scored:
    """Score events in file order through `scorer` (detector.offline.scorers), as the daemon
    would; with an explainer, each alert's top 3 features as the daemon's alert carries them
    (the scorer must then be built with explain=True)."""
    scores, warm, limits, drivers = [], [], [], []
    top: dict[int, list[dict[str, Any]]] = {}
    for k in range(0, len(events), batch):
        part = events[k : k + batch]
        r = scorer.score_many(part, now=0.0)
        scores.append(r.score)
        warm.append(r.warming)
        limit = np.full(len(part), threshold) if budget is None else budget.thresholds(r.score, r.warming)
        limits.append(limit)
        if r.driver is not None:
            drivers.append(r.driver)
        if explainer is not None:
            hits = np.flatnonzero(is_alert(r.score, r.warming, limit))
            top.update(zip((k + hits).tolist(), explainer.top(r, hits, part, 3), strict=True))
    s = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    w = np.concatenate(warm) if warm else np.zeros(0, bool)
    lim = np.concatenate(limits) if limits else np.zeros(0)
    drv = np.concatenate(drivers) if drivers else None
    return Scored(s, w, is_alert(s, w, lim), lim, drv, top)
