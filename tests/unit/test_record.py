from __future__ import annotations

import numpy as np
import pytest

from detector.core import record as checkpoint
from detector.core.record import decode_into, encode_many, record_size
from detector.core.state import DURABLE, StreamTable


def _random(t: StreamTable, name: str, slots: np.ndarray, rng: np.random.Generator) -> None:
    arr = getattr(t, name)
    shape = arr[slots].shape
    if arr.dtype.kind == "f":
        arr[slots] = rng.standard_normal(shape)
    elif arr.dtype.kind == "b":
        arr[slots] = rng.integers(0, 2, shape).astype(bool)
    else:
        arr[slots] = rng.integers(0, min(np.iinfo(arr.dtype).max, 2**62), shape, dtype=arr.dtype)


def filled_table(
    sketch_words: int = 0, categorical: tuple[int, ...] = (), embedded: tuple[int, ...] = (), n_numeric: int = 1
) -> tuple[StreamTable, int]:
    nf = 2 + sum(categorical) + sum(embedded)
    t = StreamTable(
        10, 4, 3, nf, sketch_words=sketch_words, categorical=categorical, embedded=embedded, n_numeric=n_numeric
    )
    slot = int(t.slots_for(["card-1"], now=0.0, partitions=np.array([2], np.int32))[0])
    rng = np.random.default_rng(0)
    for name in DURABLE:  # every field of the record, whatever the list holds
        _random(t, name, np.array([slot]), rng)
    t.ring_cat[slot] = rng.integers(0, 3, (3, t.n_groups))
    return t, slot


def encode(t: StreamTable, slot: int, version: str, source: int = 0) -> bytes:
    return encode_many(t, np.array([slot]), version, source)[0]


@pytest.mark.parametrize(
    ("sketch_words", "categorical", "embedded", "n_numeric"),
    [(0, (), (), 1), (8, (), (), 2), (0, (3, 4), (), 1), (4, (3,), (), 3), (0, (3,), (4, 2), 1)],
)
def test_round_trip_restores_every_field(
    sketch_words: int, categorical: tuple[int, ...], embedded: tuple[int, ...], n_numeric: int
) -> None:
    t, slot = filled_table(sketch_words, categorical, embedded, n_numeric)
    assert t.n_dense == 2 and t.n_groups == len(embedded) + (1 if categorical else 0)
    rec = encode(t, slot, "abcdef123456")
    assert len(rec) == record_size(t) == 19 + sum(getattr(t, n)[slot].nbytes for n in DURABLE)
    nf = 2 + sum(categorical) + sum(embedded)
    make = lambda words: StreamTable(  # noqa: E731
        10, 4, 3, nf, sketch_words=words, categorical=categorical, embedded=embedded, n_numeric=n_numeric
    )
    u = make(sketch_words)
    s2 = u.slot_for_restore("card-1", 2, now=0.0)
    assert decode_into(u, s2, rec, "abcdef123456")
    assert not decode_into(make(sketch_words + 4), 0, rec, "abcdef123456")  # another layout
    for name in DURABLE:
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
    from detector.core.record import source_tag

    t, slot = filled_table()
    rec = encode(t, slot, "abcdef123456", source_tag("events"))
    u = StreamTable(max_streams=10, units=4, window=3, n_features=2)
    assert not decode_into(u, 0, rec, "abcdef123456", source_tag("other-events"))
    assert decode_into(u, 0, rec, "abcdef123456", source_tag("events"))


@pytest.mark.parametrize("sketch_words", [0, 12])
def test_chunked_encoding_gives_the_same_records(sketch_words: int, monkeypatch: pytest.MonkeyPatch) -> None:
    t = StreamTable(max_streams=10, units=4, window=3, n_features=9, sketch_words=sketch_words, categorical=(3, 4))
    slots = t.slots_for([f"card-{i}" for i in range(5)], now=0.0)
    rng = np.random.default_rng(1)
    for name in DURABLE:
        _random(t, name, slots, rng)
    t.ring_cat[slots] = rng.integers(0, 3, (5, 3, t.n_groups))
    many = encode_many(t, slots[[3, 0, 4]], "abcdef123456", 77)
    assert many == [encode(t, int(s), "abcdef123456", 77) for s in slots[[3, 0, 4]]]
    assert encode_many(t, slots[:0], "abcdef123456", 77) == []  # a checkpoint with nothing dirty
    monkeypatch.setattr(checkpoint, "ENCODE_CHUNK", 2)  # several chunks: same records, same order
    assert encode_many(t, slots, "abcdef123456", 77) == [encode(t, int(s), "abcdef123456", 77) for s in slots]
    u = StreamTable(max_streams=10, units=4, window=3, n_features=9, sketch_words=sketch_words, categorical=(3, 4))
    assert decode_into(u, 0, many[1], "abcdef123456", 77)
    for name in DURABLE:
        assert np.array_equal(getattr(u, name)[0], getattr(t, name)[slots[0]]), name
