from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from detector.metrics import Metrics, observe_many


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
