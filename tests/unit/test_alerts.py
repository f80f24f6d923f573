from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import orjson

from bench.scoring import random_embeddings
from detector.config import FeaturesConfig
from detector.core.alerts import AlertPolicy
from detector.core.explain import Explainer
from detector.core.features import FeatureSpec
from detector.core.scoring import BatchScores
from detector.core.threshold import Threshold

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "detector/schemas/alert.schema.json").read_text())


def batch(spec: FeatureSpec, scores: list[float], streams: list[str], ts: list[float]) -> tuple[list, BatchScores]:
    evs = [
        spec.parse(
            orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "stream_id": s,
                    "ts": t,
                    "amount": 10.0,
                    "channel": "pos",
                    "country": "US",
                    "merchant_category": "grocery",
                }
            )
        )
        for i, (s, t) in enumerate(zip(streams, ts, strict=True))
    ]
    n, nf = len(evs), spec.n_features
    rng = np.random.default_rng(0)
    return evs, BatchScores(
        np.array(scores, np.float32),
        np.zeros(n, bool),
        rng.random((n, nf)).astype(np.float32),
        rng.random((n, nf)).astype(np.float32),
        rng.random((n, nf)).astype(np.float32),
        np.arange(n),
        np.array(scores, np.float32),
    )


def policy(spec: FeatureSpec, cooldown: float = 0.0) -> AlertPolicy:
    th = Threshold(value=1.0, critical=5.0, method="pot", target_rate=1e-4, n_calibration=10)
    return AlertPolicy(th, "v1", Explainer(spec), cooldown, ("amount", "missing_field"))


def test_alerts_match_the_schema_and_carry_explanations() -> None:
    spec = FeatureSpec(FeaturesConfig())
    evs, sc = batch(spec, [0.5, 2.0, 9.0], ["a", "b", "c"], [1e9, 1e9, 1e9])
    alerts = policy(spec).alerts_for(evs, sc, detected_at=1e9 + 1)
    assert [a["event_id"] for a in alerts] == ["e1", "e2"]
    assert [a["severity"] for a in alerts] == ["warning", "critical"]
    for a in alerts:
        jsonschema.validate(a, SCHEMA)
        assert len(a["top_features"]) == 3
        assert a["event"] == {"amount": 10.0}
        assert a["alert_id"] == f"v1:{a['event_id']}"
        shares = [f["share"] for f in a["top_features"]]
        assert shares == sorted(shares, reverse=True)
        assert all(type(x) is float for x in shares)  # plain JSON numbers, not NumPy scalars


def test_an_embedded_field_is_explained_as_one_feature_with_values_as_text() -> None:
    spec = random_embeddings(FeatureSpec(FeaturesConfig()), 5)
    evs, sc = batch(spec, [9.0], ["a"], [1e9])
    country = spec.categorical.index(next(c for c in spec.categorical if c.name == "country"))
    _, off, d = next(x for x in spec.embedded if x[0] == country)
    assert spec.embeddings is not None
    table = spec.embeddings[[i for i, _, _ in spec.embedded].index(country)]
    us = evs[0].buckets[country]
    fr = spec.parse(orjson.dumps({**evs[0].record, "country": "FR"}))
    assert fr.buckets[country] != us
    labels = {"country": {str(us): "US", str(fr.buckets[country]): "FR"}}
    sc.feature_error[:] = 0.01
    sc.feature_error[0, off : off + d] = 1.0  # the country's columns carry most of the error
    sc.expected[0, off : off + d] = table[fr.buckets[country]] + 0.01  # the model expected France
    alerts = AlertPolicy(sc_threshold(), "v1", Explainer(spec, labels)).alerts_for(evs, sc, 1e9)
    top = alerts[0]["top_features"][0]
    jsonschema.validate(alerts[0], SCHEMA)
    assert top["name"] == "country" and top["value"] == "US" and top["expected"] == "FR"
    assert top["share"] == round(d / (d + 0.01 * (spec.n_features - d)), 4)
    names = [f["name"] for f in alerts[0]["top_features"]]
    assert not any("~" in n for n in names)  # no embedding column is ever named alone


def test_a_one_hot_field_is_explained_as_one_feature_with_values_as_text() -> None:
    spec = FeatureSpec(FeaturesConfig(categorical=({"name": "channel", "buckets": 4},)))
    evs, sc = batch(spec, [9.0], ["a"], [1e9])  # a "pos" purchase
    pos = evs[0].buckets[0]
    ecom = spec.parse(orjson.dumps({**evs[0].record, "channel": "ecom"})).buckets[0]
    assert ecom != pos
    off = spec.cat_offsets[0]
    sc.feature_error[:] = 0.01
    sc.feature_error[0, off : off + 4] = 0.5
    sc.expected[0, off : off + 4] = 0.0
    sc.expected[0, off + ecom] = 0.9  # the model expected an online purchase
    labels = {"channel": {str(pos): "pos", str(ecom): "ecom"}}
    alerts = AlertPolicy(sc_threshold(), "v1", Explainer(spec, labels)).alerts_for(evs, sc, 1e9)
    jsonschema.validate(alerts[0], SCHEMA)
    top = alerts[0]["top_features"][0]
    assert (top["name"], top["value"], top["expected"]) == ("channel", "pos", "ecom")
    assert not any("=" in f["name"] for f in alerts[0]["top_features"])


def sc_threshold() -> Threshold:
    return Threshold(value=1.0, critical=5.0, method="pot", target_rate=1e-4, n_calibration=10)


def test_warming_events_never_alert() -> None:
    spec = FeatureSpec(FeaturesConfig())
    evs, sc = batch(spec, [9.0, 9.0], ["a", "b"], [1e9, 1e9])
    sc.warming[:] = [True, False]
    assert [a["stream_id"] for a in policy(spec).alerts_for(evs, sc, 1e9)] == ["b"]


def test_cooldown_suppresses_and_counts_in_event_time() -> None:
    spec = FeatureSpec(FeaturesConfig())
    p = policy(spec, cooldown=60.0)
    evs, sc = batch(spec, [9.0, 9.0, 9.0, 9.0], ["a", "a", "a", "b"], [1000.0, 1030.0, 1050.0, 1040.0])
    out = p.alerts_for(evs, sc, 2000.0)
    assert [(a["stream_id"], a["event_id"]) for a in out] == [("a", "e0"), ("b", "e3")]
    assert p.suppressed_total == 2
    evs2, sc2 = batch(spec, [9.0], ["a"], [1100.0])
    again = p.alerts_for(evs2, sc2, 2000.0)
    assert again[0]["suppressed_since_last"] == 2


def test_a_log1p_field_is_explained_in_its_own_units() -> None:
    spec = FeatureSpec(FeaturesConfig())  # amount is fed in as log1p(amount)
    evs, sc = batch(spec, [9.0], ["a"], [1e9])  # an amount of 10.0
    col = spec.names.index("amount")
    sc.feature_error[:] = 0.01
    sc.feature_error[0, col] = 1.0
    sc.observed[0, col] = np.log1p(10.0)
    sc.expected[0, col] = np.log1p(250.0)  # the model expected about 250
    top = AlertPolicy(sc_threshold(), "v1", Explainer(spec)).alerts_for(evs, sc, 1e9)[0]["top_features"][0]
    assert (top["name"], top["value"], top["expected"]) == ("amount", 10.0, 250.0)
    sc.expected[0, col] = 1e4  # an absurd expectation: no number rather than inf
    top = AlertPolicy(sc_threshold(), "v1", Explainer(spec)).alerts_for(evs, sc, 1e9)[0]["top_features"][0]
    assert top["expected"] is None
