from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from bench.scoring import random_embeddings
from detector.config import FeaturesConfig
from detector.core.features import FeatureSpec
from detector.exceptions import InvalidEvent

GOOD = {
    "event_id": "e1",
    "stream_id": "card-1",
    "ts": "2026-01-05T13:00:00Z",
    "amount": 12.5,
    "channel": "pos",
    "country": "US",
    "merchant_category": "grocery",
}


@pytest.fixture
def spec() -> FeatureSpec:
    return random_embeddings(FeatureSpec(FeaturesConfig()), 5)


def raw(**over: object) -> bytes:
    d = dict(GOOD)
    for k, v in over.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    return orjson.dumps(d)


def test_good_event_parses(spec: FeatureSpec) -> None:
    ev = spec.parse(raw())
    assert ev.stream_id == "card-1" and ev.event_id == "e1"
    assert ev.numeric == (pytest.approx(math.log1p(12.5)),)
    assert ev.ts == pytest.approx(1767618000.0)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "undecodable"),
        (b"[1, 2]", "not_an_object"),
        (raw(stream_id=...), "missing_field"),
        (raw(amount=...), "missing_field"),
        (raw(amount="12"), "wrong_type"),
        (raw(amount=True), "wrong_type"),
        (raw(amount=-3), "out_of_range"),
        (raw(country=7), "wrong_type"),
        (raw(stream_id=""), "bad_id"),
        (raw(stream_id="x" * 300), "bad_id"),
        (raw(ts="yesterday"), "bad_timestamp"),
        (raw(ts=None), "bad_timestamp"),
        (raw().replace(b"12.5", b"1e400"), "undecodable"),  # orjson refuses out-of-range floats
    ],
)
def test_bad_events_get_a_reason(spec: FeatureSpec, data: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        spec.parse(data)
    assert err.value.reason == reason


def test_non_finite_numbers_are_refused(spec: FeatureSpec) -> None:
    with pytest.raises(InvalidEvent) as err:
        spec.validate({**GOOD, "amount": float("nan")})
    assert err.value.reason == "non_finite"
    with pytest.raises(InvalidEvent) as err:
        spec.validate({**GOOD, "amount": float("inf")})
    assert err.value.reason == "non_finite"


def test_oversized_is_refused_before_decoding(spec: FeatureSpec) -> None:
    with pytest.raises(InvalidEvent) as err:
        spec.parse(b"{" + b" " * 100 + b"}", max_bytes=64)
    assert err.value.reason == "oversized"


def test_clip_and_none_transform() -> None:
    spec = FeatureSpec(
        FeaturesConfig(numeric=({"name": "amount", "transform": "none", "clip": (0, 10)},), relative_to_median=None)
    )
    assert spec.parse(raw(amount=50)).numeric == (10.0,)


def test_categorical_hashing_is_stable_and_one_hot(spec: FeatureSpec) -> None:
    a = spec.parse(raw())
    b = FeatureSpec(FeaturesConfig()).parse(raw())  # a fresh spec (another process) agrees
    assert a.buckets == b.buckets
    x = spec.base_matrix([a])
    assert len(spec.cat_offsets) == len(spec.one_hot_blocks()) == 1  # country, category: embedded
    for off, n in zip(spec.cat_offsets, spec.one_hot_blocks(), strict=True):
        block = x[0, off : off + n]
        assert block.sum() == 1.0
        assert set(np.unique(block)) == {0.0, 1.0}


def test_time_features_are_on_the_unit_circle(spec: FeatureSpec) -> None:
    x = spec.base_matrix([spec.parse(raw(ts="2026-01-05T06:00:00Z"))])  # Monday 06:00 UTC
    c = spec.time_col
    assert x[0, c] == pytest.approx(1.0, abs=1e-6)  # sin(2pi * 6/24)
    assert x[0, c + 1] == pytest.approx(0.0, abs=1e-6)
    # Day of week is continuous: Monday 00:00 is 0, so Monday 06:00 is a quarter day in.
    assert x[0, c + 2] == pytest.approx(math.sin(2 * math.pi * 0.25 / 7), abs=1e-6)
    assert x[0, c + 3] == pytest.approx(math.cos(2 * math.pi * 0.25 / 7), abs=1e-6)


def test_derived_features_follow_the_stream(spec: FeatureSpec) -> None:
    x = spec.base_matrix([spec.parse(raw()), spec.parse(raw())])
    ts = np.array([100.0, 160.0])
    # First event of a stream: unknown (NaN, normalised to 0 later); second: log1p(60 s).
    st = spec.derive(x[:1], ts[:1], spec.fresh_state(1), np.array([False]))
    assert np.isnan(x[0, spec.dt_col]) and np.isnan(x[0, spec.med_col])
    xr = x[1:]
    rec2 = spec.derive(xr, ts[1:], st, np.array([True]))["recent"]
    assert xr[0, spec.dt_col] == pytest.approx(math.log1p(60))
    assert xr[0, spec.med_col] == pytest.approx(0.0)  # same amount as the median so far
    # One previous event 60 s ago, decayed over an hour: log(1 + e^(-60/3600)).
    assert xr[0, spec.recent_col] == pytest.approx(math.log1p(math.exp(-60 / 3600)))
    assert rec2[0] == pytest.approx(math.exp(-60 / 3600) + 1)


def test_the_running_median_moves_in_its_columns_own_scale() -> None:
    """A sensor's current (amperes, sd ~10): after a level shift back from 86 A to 30 A, the
    median follows within tens of events with the step fitted on training data; with the fixed
    raw step of 0.5 it would need ~560 events (two days at one reading per 5 minutes)."""
    cfg = FeaturesConfig(
        numeric=({"name": "current", "transform": "none"},),
        categorical=(),
        relative_to_median="current",
        label_fields=("label",),
    )
    unfitted = FeatureSpec(cfg)
    rng = np.random.default_rng(3)
    train = [unfitted.parse(orjson.dumps({**GOOD, "current": float(v)})) for v in rng.normal(30, 10, 500)]
    step = unfitted.fit_median_step(train)
    assert step == pytest.approx(0.5 * np.std([e.numeric[0] for e in train]), rel=1e-6)
    assert unfitted.median_step == 0.5  # unchanged: binding makes a copy
    assert FeatureSpec(FeaturesConfig(relative_to_median=None)).fit_median_step(train) is None
    slow = FeatureSpec(FeaturesConfig(**{**cfg.model_dump(), "relative_to_median_step": 0.05}))
    assert slow.fit_median_step(train) == pytest.approx(step / 10, rel=1e-6)

    def events_to_recover(s: FeatureSpec) -> int:
        st = {**s.fresh_state(1), "median": np.array([86.0], np.float32)}
        back = s.parse(orjson.dumps({**GOOD, "current": 30.0}))
        for n in range(1, 2000):
            x = s.base_matrix([back])
            st = s.derive(x, np.array([300.0 * n]), st, np.array([True]))
            if abs(float(st["median"][0]) - 30.0) < 1.0:
                return n
        return 2000

    fast, slow = events_to_recover(unfitted.with_median_step(step)), events_to_recover(unfitted)
    assert fast < 80 and slow > 500, (fast, slow)  # measured 59 and 551


def test_labels_do_not_reach_the_features(spec: FeatureSpec) -> None:
    with_labels = spec.parse(orjson.dumps({**GOOD, "label": 1, "fraud_type": "x", "incident_id": "i"}))
    without = spec.parse(raw())
    assert np.array_equal(spec.base_matrix([with_labels]), spec.base_matrix([without]), equal_nan=True)


def test_novelty_flags_a_value_new_to_the_stream() -> None:
    spec = random_embeddings(FeatureSpec(FeaturesConfig(novelty=("country", "merchant_id"))), 5)
    evs = [spec.parse(raw(country=c, merchant_id="m1")) for c in ("US", "US", "FR", "US")]
    x = spec.base_matrix(evs)
    marks = spec.marks(evs)
    st = spec.fresh_state(1)
    flags = []
    for i in range(4):
        xr = x[i : i + 1]
        st = spec.derive(xr, np.array([100.0 + i]), st, np.array([i > 0]), marks[i : i + 1])
        flags.append(xr[0, spec.new_col : spec.new_col + 2].tolist())
    # First event: unknown (NaN); then US seen, FR new, US seen again; the merchant never changes.
    assert np.isnan(flags[0]).all()
    assert flags[1:] == [[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]
    assert spec.names[spec.new_col : spec.new_col + 2] == ("country_is_new", "merchant_id_is_new")
    assert spec.one_hot_columns()[spec.new_col : spec.new_col + 2].all()  # 0/1, not standardised


def test_novelty_field_missing_counts_as_empty_and_not_text_is_invalid() -> None:
    spec = FeatureSpec(FeaturesConfig(novelty=("merchant_id",)))
    assert spec.parse(raw()).marks == spec.parse(raw(merchant_id="")).marks  # GOOD has no merchant_id
    with pytest.raises(InvalidEvent) as e:
        spec.parse(raw(merchant_id=7))
    assert e.value.reason == "wrong_type"


def test_novelty_sketch_false_positive_rate_is_within_its_design() -> None:
    """A 256-bit Bloom filter with 2 hashes: after m values, a new one looks seen with
    probability (1 - e^(-2m/256))^2, 4.4% at m = 30."""
    spec = random_embeddings(FeatureSpec(FeaturesConfig(novelty=("merchant_id",))), 5)
    trials, false_pos, m = 300, 0, 30
    for t in range(trials):
        evs = [spec.parse(raw(merchant_id=f"m{t}-{k}")) for k in range(m + 1)]
        x = spec.base_matrix(evs)
        marks = spec.marks(evs)
        st = spec.fresh_state(1)
        for i in range(m + 1):
            xr = x[i : i + 1]
            st = spec.derive(xr, np.array([100.0 + i]), st, np.array([i > 0]), marks[i : i + 1])
        false_pos += xr[0, spec.new_col] == 0.0  # the (m+1)-th value is new, flagged as seen?
    design = (1 - np.exp(-2 * m / 256)) ** 2
    assert false_pos / trials < 2.5 * design + 0.01


def test_stream_z_scores_are_against_the_streams_own_history() -> None:
    """A card that always spends ~100 and one that spends ~10: the same 100 is ordinary for the
    first and 10+ sd out for the second; one outlier moves the statistics only as far as 4 sd."""
    spec = random_embeddings(FeatureSpec(FeaturesConfig()), 5)
    rng = np.random.default_rng(0)
    zs = {}
    for level in (100.0, 10.0):
        st = spec.fresh_state(1)
        for i, v in enumerate(level * np.exp(0.1 * rng.standard_normal(40))):
            x = spec.base_matrix([spec.parse(raw(amount=float(v)))])
            st = spec.derive(x, np.array([100.0 * i]), st, np.array([i > 0]))
            if i == 1:
                assert np.isnan(x[0, spec.z_col])  # too little history yet
        x = spec.base_matrix([spec.parse(raw(amount=100.0))])
        before = st["mean"].copy()
        st = spec.derive(x, np.array([1e4]), st, np.array([True]))
        zs[level] = float(x[0, spec.z_col])
        assert abs(float(st["mean"][0, 0] - before[0, 0])) <= 4 * np.sqrt(float(st["var"][0, 0])) / 10 + 1e-3
    assert abs(zs[100.0]) < 3 < 10 < zs[10.0]
    assert spec.names[spec.z_col] == "amount_stream_z"
