from __future__ import annotations

import numpy as np
import pytest

from detector import checkpoint
from detector.checkpoint import decode_into, encode, encode_many, record_size
from detector.state import StreamTable


def filled_table(
    n_novelty: int = 0, categorical: tuple[int, ...] = (), embedded: tuple[int, ...] = ()
) -> tuple[StreamTable, int]:
    nf = 2 + sum(categorical) + sum(embedded)
    t = StreamTable(10, 4, 3, nf, n_novelty=n_novelty, categorical=categorical, embedded=embedded)
    slot = int(t.slots_for(["card-1"], now=0.0, partitions=np.array([2], np.int32))[0])
    rng = np.random.default_rng(0)
    t.h[slot], t.c[slot] = rng.standard_normal(4), rng.standard_normal(4)
    t.ring[slot] = rng.standard_normal((3, 2))
    t.ring_cat[slot] = rng.integers(0, 3, (3, t.n_groups))
    t.count[slot], t.last_ts[slot], t.median[slot], t.offset[slot] = 7, 1.7e9, 3.5, 1234
    t.recent[slot], t.evidence[slot] = 1.25, 6.5
    t.known[slot] = rng.integers(0, 2**63, n_novelty, dtype=np.uint64)
    return t, slot


@pytest.mark.parametrize(
    ("n_novelty", "categorical", "embedded"),
    [(0, (), ()), (2, (), ()), (0, (3, 4), ()), (1, (3,), ()), (0, (3,), (4, 2))],
)
def test_round_trip_restores_every_field(
    n_novelty: int, categorical: tuple[int, ...], embedded: tuple[int, ...]
) -> None:
    t, slot = filled_table(n_novelty, categorical, embedded)
    assert t.n_dense == 2 and t.n_groups == len(embedded) + (1 if categorical else 0)
    rec = encode(t, slot, "abcdef123456")
    assert len(rec) == record_size(t)
    nf = 2 + sum(categorical) + sum(embedded)
    u = StreamTable(10, 4, 3, nf, n_novelty=n_novelty, categorical=categorical, embedded=embedded)
    s2 = u.slot_for_restore("card-1", 2, now=0.0)
    assert decode_into(u, s2, rec, "abcdef123456")
    assert not decode_into(StreamTable(10, 4, 3, nf, n_novelty=n_novelty + 1), 0, rec, "abcdef123456")
    for name in ("h", "c", "ring", "ring_cat", "count", "last_ts", "median", "recent", "evidence", "offset", "known"):
        assert np.array_equal(getattr(u, name)[s2], getattr(t, name)[slot]), name
    assert not u.dirty[s2]  # restored state is not re-written at the next checkpoint


def test_state_of_another_model_or_shape_is_refused() -> None:
    t, slot = filled_table()
    rec = encode(t, slot, "abcdef123456")
    u = StreamTable(max_streams=10, units=4, window=3, n_features=2)
    assert not decode_into(u, 0, rec, "other-model1")
    v = StreamTable(max_streams=10, units=8, window=3, n_features=2)
    assert not decode_into(v, 0, rec, "abcdef123456")
    assert not decode_into(u, 0, b"garbage", "abcdef123456")


def test_dirty_tracking_and_partition_drop() -> None:
    t = StreamTable(max_streams=10, units=2, window=2, n_features=1)
    t.slots_for(["a", "b", "c"], now=0.0, partitions=np.array([0, 1, 1], np.int32))
    assert sorted(t.take_dirty()[0]) == ["a", "b", "c"]
    assert t.take_dirty()[0] == []
    t.slots_for(["b"], now=1.0, partitions=np.array([1], np.int32))
    ids, _, parts = t.take_dirty()
    assert list(zip(ids, parts, strict=True)) == [("b", 1)]
    assert t.drop_partitions({1}) == 2
    assert list(t.index) == ["a"]


def test_state_written_for_another_input_topic_is_refused() -> None:
    from detector.checkpoint import source_tag

    t, slot = filled_table()
    rec = encode(t, slot, "abcdef123456", source_tag("events"))
    u = StreamTable(max_streams=10, units=4, window=3, n_features=2)
    assert not decode_into(u, 0, rec, "abcdef123456", source_tag("other-events"))
    assert decode_into(u, 0, rec, "abcdef123456", source_tag("events"))


@pytest.mark.parametrize("n_novelty", [0, 3])
def test_vectorised_encoding_is_byte_identical(n_novelty: int, monkeypatch: pytest.MonkeyPatch) -> None:
    t = StreamTable(max_streams=10, units=4, window=3, n_features=9, n_novelty=n_novelty, categorical=(3, 4))
    slots = t.slots_for([f"card-{i}" for i in range(5)], now=0.0)
    rng = np.random.default_rng(1)
    for name in ("h", "c", "ring", "median", "recent", "last_ts"):
        getattr(t, name)[slots] = rng.standard_normal(getattr(t, name)[slots].shape)
    t.count[slots], t.offset[slots] = rng.integers(0, 1000, 5), rng.integers(-1, 1 << 40, 5)
    t.known[slots] = rng.integers(0, 2**63, (5, n_novelty), dtype=np.uint64)
    t.ring_cat[slots] = rng.integers(0, 3, (5, 3, t.n_groups))
    many = encode_many(t, slots[[3, 0, 4]], "abcdef123456", 77)
    assert many == [encode(t, int(s), "abcdef123456", 77) for s in slots[[3, 0, 4]]]
    assert encode_many(t, slots[:0], "abcdef123456", 77) == []  # a checkpoint with nothing dirty
    monkeypatch.setattr(checkpoint, "ENCODE_CHUNK", 2)  # several chunks: same records, same order
    assert encode_many(t, slots, "abcdef123456", 77) == [encode(t, int(s), "abcdef123456", 77) for s in slots]
