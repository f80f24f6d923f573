"""Detection quality against labels: pure functions over arrays.

m = evaluate(scores, alerts, labels, incidents, streams, ts)
m["pr_auc"], m["incident_recall"], m["false_alerts_per_10k"]
ap = average_precision(scores, labels)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under ROC by the rank-sum (Mann-Whitney) statistic, ties averaged."""
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(s))
    r[order] = ranks
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """PR-AUC as average precision (the step-wise area, no interpolation)."""
    n_pos = int((labels == 1).sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    y = labels[order] == 1
    tp = np.cumsum(y)
    precision = tp / np.arange(1, len(y) + 1)
    return float(precision[y].sum() / n_pos)


def evaluate(
    scores: np.ndarray, alerts: np.ndarray, labels: np.ndarray, incidents: list[Any], streams: list[str], ts: np.ndarray
) -> dict[str, Any]:
    labels = labels.astype(np.int64)
    tp = int((alerts & (labels == 1)).sum())
    fp = int((alerts & (labels == 0)).sum())
    fn = int((~alerts & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    # Incidents: caught when any of their events alerts; delay from the first fraud event.
    first: dict[Any, int] = {}
    caught: dict[Any, int] = {}
    for i, inc in enumerate(incidents):
        if inc is None:
            continue
        first.setdefault(inc, i)
        if alerts[i] and inc not in caught:
            caught[inc] = i
    delays_ev, delays_s = [], []
    for inc, i_alert in caught.items():
        i0 = first[inc]
        stream = streams[i0]
        delays_ev.append(sum(1 for k in range(i0, i_alert) if streams[k] == stream and incidents[k] == inc))
        delays_s.append(float(ts[i_alert] - ts[i0]))
    n_normal = int((labels == 0).sum())
    return {
        "events": len(scores),
        "alerts": int(alerts.sum()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(scores, labels),
        "pr_auc": average_precision(scores, labels),
        "incidents": len(first),
        "incidents_caught": len(caught),
        "incident_recall": len(caught) / len(first) if first else float("nan"),
        "mean_delay_events": float(np.mean(delays_ev)) if delays_ev else float("nan"),
        "mean_delay_seconds": float(np.mean(delays_s)) if delays_s else float("nan"),
        "false_alerts_per_10k": 1e4 * fp / n_normal if n_normal else float("nan"),
    }
