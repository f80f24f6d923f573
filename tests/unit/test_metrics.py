from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from detector.exceptions import INVALID_REASONS
from detector.service.metrics import SEVERITIES, Metrics, TopStreams, observe_many


def test_observe_many_equals_one_observe_per_value() -> None:
    values = np.random.default_rng(0).lognormal(0, 2, 5000)
    values[:10] = [0.1, 0.2, 1, 1000, 1e9, 0, 0.75, 3, 3.0000001, 100]  # on and around bucket bounds
    a, b = CollectorRegistry(), CollectorRegistry()
    ma, mb = Metrics.create(a), Metrics.create(b)
    for v in values:
        ma.anomaly_score.observe(float(v))
    observe_many(mb.anomaly_score, values)
    sa = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in a.collect()
        for s in s.samples
        if s.name.startswith("detector_anomaly_score")
    }
    sb = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in b.collect()
        for s in s.samples
        if s.name.startswith("detector_anomaly_score")
    }
    assert sa.keys() == sb.keys()
    for k in sa:
        assert abs(sa[k] - sb[k]) <= 1e-6 * max(1.0, abs(sa[k])), k


def test_metrics_live_on_the_injected_registry_only() -> None:
    r = CollectorRegistry()
    m = Metrics.create(r)
    m.events.labels(result="scored").inc(3)
    assert r.get_sample_value("detector_events_total", {"result": "scored"}) == 3
    assert Metrics.create(CollectorRegistry()).registry is not r  # no global state: a second one is fine


def top_scores(r: CollectorRegistry) -> dict[str, float]:
    return {
        s.labels["stream_id"]: s.value
        for mt in r.collect()
        if mt.name == "detector_top_stream_score"
        for s in mt.samples
    }


def test_top_streams_publishes_the_k_best_of_each_period_and_nothing_else() -> None:
    r = CollectorRegistry()
    m = Metrics.create(r)
    top = TopStreams(m.top_streams, k=3, period=10.0)
    ids = [f"s{i}" for i in range(50)]
    scores = np.arange(50, dtype=float)
    scores[49] = -np.inf  # a warming event is never ranked
    top.tick(0.0)
    top.update(scores, lambda i: ids[i])
    top.update(np.array([100.0, 1.0]), lambda i: ["s3", "s4"][i])
    top.tick(5.0)
    assert top_scores(r) == {}  # the period is not over
    top.tick(10.0)
    published = top_scores(r)
    assert published == {"s3": 100.0, "s48": 48.0, "s47": 47.0}
    top.update(np.array([2.0]), lambda i: "s9")
    top.tick(20.0)  # the next period replaces the last one
    published = top_scores(r)
    assert published == {"s9": 2.0}


def test_every_label_value_the_code_uses_exists_at_zero_from_the_start() -> None:
    import re
    from pathlib import Path

    src = "\n".join(p.read_text() for p in (Path(__file__).parents[2] / "detector").rglob("*.py"))
    reasons = set(re.findall(r'InvalidEvent\(\s*"([a-z_]+)"', src))
    assert reasons and reasons <= set(INVALID_REASONS)
    r = CollectorRegistry()
    Metrics.create(r)
    for reason in INVALID_REASONS:
        assert r.get_sample_value("detector_dead_letter_total", {"reason": reason}) == 0.0
    for severity in SEVERITIES:
        assert r.get_sample_value("detector_alerts_total", {"severity": severity}) == 0.0
