"""Learned embeddings of categorical fields: fitted from co-occurrence within streams, fixed,
deterministic, and filled into the feature vector as dense columns."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from detector.config import FeaturesConfig
from detector.core.embedding import bucket_labels, co_occurrence, embed, fit_embeddings
from detector.core.features import FeatureSpec, ParsedEvent


def _spec() -> FeatureSpec:
    return FeatureSpec(
        FeaturesConfig(
            categorical=(
                {"name": "channel", "buckets": 4},
                {"name": "merchant_id", "buckets": 64, "embedding": 3},
            )
        )
    )


def _event(spec: FeatureSpec, stream: str, i: int, merchant: str) -> ParsedEvent:
    rec = {"event_id": f"{stream}-{i}", "stream_id": stream, "ts": 1e9 + i, "amount": 5.0}
    return spec.parse(orjson.dumps({**rec, "channel": "pos", "merchant_id": merchant}))


def test_co_occurrence_counts_distinct_values_of_one_stream_weighted_by_their_share() -> None:
    streams = np.array([0, 0, 0, 1, 1])
    values = np.array([1, 1, 2, 2, 3])
    m = co_occurrence(streams, values, 4)
    # stream 0: p(1) = 2/3, p(2) = 1/3; stream 1: p(2) = p(3) = 1/2. A value with itself: not counted.
    assert m[1, 2] == pytest.approx(2 / 9) and m[2, 1] == pytest.approx(2 / 9)
    assert m[2, 3] == pytest.approx(1 / 4)
    assert m[1, 3] == 0 and np.trace(m) == 0 and m[0].sum() == 0


def test_values_shared_by_the_same_streams_embed_close_and_unseen_ones_at_zero() -> None:
    # Two communities of shops: streams 0-9 use shops 0-3, streams 10-19 use shops 4-7.
    rng = np.random.default_rng(0)
    streams = np.repeat(np.arange(20), 30)
    values = np.where(streams < 10, rng.integers(0, 4, 600), rng.integers(4, 8, 600))
    e = embed(co_occurrence(streams, values, 10), 2)
    assert e.shape == (10, 2) and e.dtype == np.float32
    assert np.all(e[8:] == 0)  # shops 8, 9 were never seen
    dist = np.linalg.norm(e[:8, None] - e[None, :8], axis=2)
    same = dist[:4, :4].max(), dist[4:8, 4:8].max()
    assert max(same) < dist[:4, 4:8].min()


def test_fit_is_deterministic_and_bound_tables_fill_the_dense_columns() -> None:
    spec = _spec()
    assert spec.names[-7:-4] == ("merchant_id~0", "merchant_id~1", "merchant_id~2")
    assert spec.one_hot_blocks() == (4,)  # the embedded field has no one-hot block
    assert not spec.one_hot_columns()[-7:-4].any()  # dense columns: standardised
    events = [_event(spec, f"s{k}", i, f"m{(k % 3) * 5 + i % 5}") for k in range(30) for i in range(10)]
    a, b = fit_embeddings(spec, events), fit_embeddings(spec, events)
    assert a.keys() == {"merchant_id"} and np.array_equal(a["merchant_id"], b["merchant_id"])
    with pytest.raises(RuntimeError, match="with_embeddings"):
        spec.base_matrix(events[:2])
    bound = spec.with_embeddings(a)
    x = bound.base_matrix(events[:2])
    want = a["merchant_id"][spec.buckets_of(events[:2])[:, 1]]
    assert np.array_equal(x[:, -7:-4], want) and np.abs(want).sum() > 0
    with pytest.raises(ValueError, match="expected \\(64, 3\\)"):
        spec.with_embeddings({"merchant_id": np.zeros((64, 2))})
    with pytest.raises(ValueError, match="no embedding table for the categorical field merchant_id"):
        spec.with_embeddings({})


def test_each_seen_bucket_is_labelled_with_its_most_frequent_value() -> None:
    spec = _spec()
    # m1 and m3 share a bucket of 64 when their crc32s agree mod 64: find two values that do.
    bucket = {m: spec.parse(orjson.dumps({**_event(spec, "s", 0, m).record})).buckets[1] for m in map(str, range(500))}
    a, b = next((x, y) for x in bucket for y in bucket if x < y and bucket[x] == bucket[y])
    c = next(x for x in bucket if bucket[x] != bucket[a])
    events = [_event(spec, "s", i, m) for i, m in enumerate([a, b, b, c])]
    labels = bucket_labels(spec, events)["merchant_id"]
    assert labels == {str(bucket[a]): b, str(bucket[c]): c}  # the shared bucket: its most frequent value
