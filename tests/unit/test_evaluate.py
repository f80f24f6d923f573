from __future__ import annotations

import numpy as np
import pytest

from detector.offline.measures import average_precision, evaluate, roc_auc


def test_perfect_and_inverted_rankings() -> None:
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert average_precision(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0


def test_ties_count_half() -> None:
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5


def test_average_precision_by_hand() -> None:
    # Ranked: 1 (pos), 2 (neg), 3 (pos): precision at the positives is 1 and 2/3.
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]))
    assert ap == pytest.approx((1 + 2 / 3) / 2)


def test_incident_recall_delay_and_false_alerts() -> None:
    labels = np.array([0, 1, 1, 0, 1, 0])
    incidents = [None, "i1", "i1", None, "i2", None]
    streams = ["a", "a", "a", "b", "b", "b"]
    alerts = np.array([False, False, True, True, False, False])
    ts = np.arange(6, dtype=float) * 10
    m = evaluate(alerts.astype(float), alerts, labels, incidents, streams, ts)
    assert m["incident_recall"] == 0.5
    assert m["mean_delay_events"] == 1.0 and m["mean_delay_seconds"] == 10.0
    assert m["false_alerts_per_10k"] == pytest.approx(1e4 / 3)
    assert m["precision"] == 0.5 and m["recall"] == pytest.approx(1 / 3)


def test_pr_points_and_timeline_streams() -> None:
    from detector.offline.plots import Events, pick_streams, pr_points

    scores = np.array([0.9, 0.8, 0.8, 0.1])
    labels = np.array([1, 0, 1, 0])
    recall, precision = pr_points(scores, labels)
    assert recall.tolist() == [0.5, 1.0, 1.0] and precision.tolist() == [1.0, 2 / 3, 0.5]  # the tie counts once
    ev = Events(
        labels=np.array([0, 1, 0, 0, 0, 0]),
        incidents=[None, "inc-1", None, None, None, None],
        streams=["a", "b", "c", "c", "d", "b"],
        ts=np.arange(6.0),
    )
    alerts = np.array([False, True, True, True, True, False])
    assert pick_streams(ev, alerts) == ["b", "c"]  # the incident's stream, then the most false alerts
