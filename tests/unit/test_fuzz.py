"""Hostile input: the decoder and feature extraction never raise anything but InvalidEvent, and
the loop's decode step dead-letters every bad event with its reason (10,000 generated events)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.scoring import random_embeddings
from detector.config import FeaturesConfig, Settings
from detector.core.features import FeatureSpec
from detector.exceptions import INVALID_REASONS, InvalidEvent

SPEC = random_embeddings(FeatureSpec(FeaturesConfig()), 5)
MAX_BYTES = 65536

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50)
    | st.text(alphabet=st.characters(min_codepoint=0x80), max_size=20)  # unicode, incl. surrogates' neighbours
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
good_values = {
    "event_id": st.text(min_size=1, max_size=40) | st.integers(),
    "stream_id": st.text(min_size=1, max_size=40) | st.integers(),
    "ts": st.sampled_from(["2026-01-05T13:00:00Z", "2026-01-05 13:00", "yesterday"])
    | st.floats(min_value=0, max_value=4e9)
    | st.floats(allow_nan=True, allow_infinity=True),
    "amount": st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(10**30), max_value=10**30),
    "channel": st.sampled_from(["pos", "ecom", "atm"]) | st.text(max_size=300),
    "country": st.sampled_from(["US", "DE"]) | st.integers(),
    "merchant_category": st.sampled_from(["grocery", "fuel"]) | st.none(),
}


@st.composite
def events(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "arbitrary_json", "bytes", "deep", "huge"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    if kind == "deep":
        depth = draw(st.integers(min_value=1, max_value=5000))
        return b"[" * depth + b"]" * draw(st.sampled_from([depth, 0]))
    if kind == "huge":
        return json.dumps({"event_id": "e", "stream_id": "s" * draw(st.integers(0, 100_000)), "ts": 1.7e9}).encode()
    if kind == "arbitrary_json":
        return json.dumps(draw(json_values), allow_nan=True).encode()
    doc: dict[str, Any] = {}
    for key, strategy in good_values.items():
        if draw(st.integers(0, 9)) > 0:  # each field missing one time in ten
            doc[key] = draw(strategy | json_values) if draw(st.integers(0, 4)) == 0 else draw(strategy)
    if draw(st.booleans()):
        doc[draw(st.text(max_size=10))] = draw(json_values)
    return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(events())
def test_decoder_and_features_only_ever_refuse_with_a_known_reason(raw: bytes) -> None:
    try:
        ev = SPEC.parse(raw, MAX_BYTES)
    except InvalidEvent as exc:
        assert exc.reason in INVALID_REASONS
        assert len(str(exc)) < 2000
        return
    # An accepted event yields finite features for every stateless column.
    assert isinstance(ev.stream_id, str) and ev.stream_id and isinstance(ev.event_id, str)
    assert math.isfinite(ev.ts) and all(math.isfinite(v) for v in ev.numeric)
    assert all(0 <= b < c.buckets for b, c in zip(ev.buckets, SPEC.categorical, strict=True))
    x = SPEC.base_matrix([ev])
    stateless = [i for i, n in enumerate(SPEC.names) if not np.isnan(x[0, i])]
    assert stateless and np.isfinite(x[0, stateless]).all()


@pytest.fixture(scope="module")
def detector(small_settings: Settings, model_dir: Path) -> Any:
    from detector.service.loop import Detector

    data = small_settings.model_dump()
    data["model"]["path"] = model_dir
    return Detector(Settings(**data))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(events(), min_size=1, max_size=20))
def test_intake_dead_letters_every_bad_event_with_its_reason_and_source(detector: Any, batch: list[bytes]) -> None:
    """Through the daemon's intake (detector.service.intake), as the loop calls it: every record is
    either an event to score or a dead letter whose headers say why and where it came from."""
    from detector.kafka.base import Record
    from detector.service.intake import dead_letter_headers, intake

    records = [Record("events", 3, 1000 + i, b"k", raw, 0) for i, raw in enumerate(batch)]
    out = intake(records, detector.spec, detector.settings.runtime, [detector.table], now=1.8e9)
    assert len(out.events) + len(out.dead) == len(records) and out.already_applied == 0
    dlq = {r.offset: (r.value, dict(dead_letter_headers(r, exc))) for r, exc in out.dead}
    for r in records:
        if r.offset in dlq:
            value, h = dlq[r.offset]
            assert value == r.value  # unchanged
            assert h["reason"].decode() in INVALID_REASONS and h["detail"]
            assert h["source_topic"] == b"events" and h["source_partition"] == b"3"
            assert int(h["source_offset"]) == r.offset
    assert set(out.offsets.tolist()).isdisjoint(dlq)
    assert len(out.offsets) == len(out.events) == len(out.partitions)
