"""Alert explanations: the features with the largest share of an event's error. Pure.

    explainer = Explainer(spec, artifact.bucket_labels)         # spec bound to the model
    explainer.top(scores, rows, events, k=3)   # per row: [{name, value, expected, share}, ...]

A numeric or derived column is one entry, with its observed and expected value unnormalised: a
numeric field fed in as log1p in the field's own units (the event's value as sent, the expectation
through expm1), a derived column in its own (`log_seconds_since_previous` is a log). A
categorical field is one entry whatever its width (a one-hot block, or an embedding's d columns),
named after the field: its value is the event's own text, and its expected value a training value
(each bucket is labelled with its most frequent one): for a one-hot block, the bucket the model
expected most; for an embedding, the labelled bucket whose vector is nearest to the expectation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from detector.core.features import FeatureSpec, ParsedEvent
from detector.core.scoring import BatchScores


class Explainer:
    def __init__(self, spec: FeatureSpec, labels: dict[str, dict[str, str]] | None = None) -> None:
        labels = labels or {}
        tables = spec.embeddings if spec.embeddings is not None else (None,) * len(spec.embedded)
        # First column -> (field name, width, labelled vectors or None for one-hot, their labels).
        fields: dict[int, tuple[str, int, np.ndarray | None, dict[int, str]]] = {}
        for (i, off, d), table in zip(spec.embedded, tables, strict=True):
            name = spec.categorical[i].name
            named = {int(b): v for b, v in labels.get(name, {}).items()} if table is not None else {}
            known = np.zeros((0, d), np.float32) if table is None else table[sorted(named)]
            fields[off] = (name, d, known, dict(sorted(named.items())))
        for i, off in zip(spec.one_hot_index, spec.cat_offsets, strict=True):
            c = spec.categorical[i]
            fields[off] = (c.name, c.buckets, None, {int(b): v for b, v in labels.get(c.name, {}).items()})
        # Explained items in column order: (name, first column, width, field or None).
        self.groups: list[tuple[str, int, int, tuple[np.ndarray | None, dict[int, str]] | None]] = []
        col = 0
        while col < spec.n_features:
            if col in fields:
                field = fields[col]
                self.groups.append((field[0], col, field[1], (field[2], field[3])))
                col += field[1]
            else:
                self.groups.append((spec.names[col], col, 1, None))
                col += 1
        # Numeric fields fed in as log1p are explained in the field's own units: the event's value
        # as sent (an amount of 10.33, not 2.43) and the expectation mapped back with expm1.
        self.log1p = {f.name for f in spec.cfg.numeric if f.transform == "log1p"}
        self.agg = np.zeros((spec.n_features, len(self.groups)), np.float64)
        for g, (_, first, width, _) in enumerate(self.groups):
            self.agg[first : first + width, g] = 1.0

    def top(
        self, scores: BatchScores, rows: np.ndarray, events: list[ParsedEvent], k: int = 3
    ) -> list[list[dict[str, Any]]]:
        if len(rows) == 0:
            return []
        e = scores.feature_error[rows].astype(np.float64) @ self.agg
        order = np.argsort(-e, axis=1, kind="stable")[:, :k]
        total = np.maximum(e.sum(axis=1), 1e-12)
        out = []
        for n, row in enumerate(rows.tolist()):
            items = []
            for g in order[n].tolist():
                name, first, width, field = self.groups[g]
                expect = scores.expected[row, first : first + width]
                value: Any
                expected: Any
                if field is None and name in self.log1p:
                    value = _num(float(events[row].record[name]))
                    with np.errstate(over="ignore"):  # an absurd expectation is inf, then null
                        expected = _num(float(np.expm1(np.float64(expect[0]))))
                elif field is None:
                    value, expected = _num(float(scores.observed[row, first])), _num(float(expect[0]))
                else:
                    v = events[row].record.get(name)
                    value, expected = (v if isinstance(v, str) else None), _expected(expect, *field)
                items.append(
                    {"name": name, "value": value, "expected": expected, "share": round(float(e[n, g] / total[n]), 4)}
                )
            out.append(items)
        return out


def _expected(vec: np.ndarray, known: np.ndarray | None, named: dict[int, str]) -> str | None:
    """The training value the model expected: the most expected bucket of a one-hot block, or the
    labelled bucket nearest to the expected embedding vector."""
    if not named or not np.isfinite(vec).all():
        return None
    if known is None:
        return named.get(int(np.argmax(vec)))
    return list(named.values())[int(np.argmin(np.square(known - vec).sum(axis=1)))]


def _num(v: float) -> float | None:
    return round(v, 4) if math.isfinite(v) else None
