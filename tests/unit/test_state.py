from __future__ import annotations

import numpy as np

from detector.core.state import StreamTable


def test_slots_are_stable_and_new_streams_start_clean() -> None:
    t = StreamTable(max_streams=10, units=4, window=3, n_features=2)
    a = t.slots_for(["a", "b", "a"], now=0.0)
    assert a[0] == a[2] and a[0] != a[1]
    t.h[a[0]] = 1.0
    t.count[a[0]] = 5
    assert t.slots_for(["a"], now=1.0)[0] == a[0]
    assert t.count[a[0]] == 5


def test_capacity_bounds_memory_and_evicts_least_recently_seen() -> None:
    t = StreamTable(max_streams=100, units=4, window=3, n_features=2)
    t.slots_for([f"s{i}" for i in range(100)], now=0.0)
    t.slots_for(["s0"], now=1.0)  # s0 is now the most recently seen
    cap = t.capacity
    t.slots_for([f"new{i}" for i in range(50)], now=2.0)
    assert len(t) == 100 and t.capacity == cap == 100
    assert t.evictions == 50
    assert "s0" in t.index  # seen in a later batch than s1..s99: never the one evicted
    assert sum(f"s{i}" in t.index for i in range(1, 100)) == 49
    assert all(f"new{i}" in t.index for i in range(50))


def test_a_flood_of_ids_never_grows_past_the_bound() -> None:
    t = StreamTable(max_streams=1000, units=32, window=16, n_features=22)
    for k in range(0, 1_000_000, 10_000):
        t.slots_for([f"x{i}" for i in range(k, k + 10_000)][:1000], now=float(k))
    assert len(t) == 1000 and t.h.shape[0] == 1000


def test_evicted_slot_is_reset_for_its_new_stream() -> None:
    t = StreamTable(max_streams=1, units=2, window=2, n_features=1)
    s = t.slots_for(["a"], now=0.0)[0]
    t.h[s] = 3.0
    t.count[s] = 9
    s2 = t.slots_for(["b"], now=1.0)[0]
    assert s2 == s and t.count[s2] == 0 and np.all(t.h[s2] == 0)


def test_idle_ttl_expires_old_streams() -> None:
    t = StreamTable(max_streams=10, units=2, window=2, n_features=1, idle_ttl_seconds=100)
    t.slots_for(["old"], now=0.0)
    t.slots_for(["fresh"], now=150.0)
    assert t.expire(now=160.0) == 1
    assert list(t.index) == ["fresh"]


def test_state_bytes_per_stream_at_default_sizes_is_under_2_kib() -> None:
    t = StreamTable(max_streams=1000, units=32, window=16, n_features=22)
    t.slots_for([f"s{i}" for i in range(1000)], now=0.0)
    assert t.bytes_per_stream() <= 2048


def test_only_streams_in_the_changelog_get_a_tombstone_when_evicted() -> None:
    t = StreamTable(max_streams=4, units=2, window=2, n_features=1, idle_ttl_seconds=100.0)
    t.slots_for(["saved-a", "saved-b"], now=0.0, partitions=np.array([1, 2], dtype=np.int32))
    ids, _, _ = t.take_dirty()  # a checkpoint writes them to the changelog
    assert sorted(ids) == ["saved-a", "saved-b"]
    t.slots_for(["flood-1", "flood-2"], now=1.0)
    t.slots_for(["flood-3", "flood-4"], now=2.0)  # evicts the two least recently seen: saved-a, saved-b
    t.slots_for(["flood-5", "flood-6"], now=3.0)  # evicts flood-1, flood-2: never saved
    assert t.evictions == 4
    assert sorted(t.evicted) == [("saved-a", 1), ("saved-b", 2)]
    t.evicted.clear()
    t.take_dirty()  # flood-3..6 saved now
    assert t.expire(now=200.0) == 4
    assert sorted(sid for sid, _ in t.evicted) == ["flood-3", "flood-4", "flood-5", "flood-6"]
    r = t.slot_for_restore("restored", partition=0, now=300.0)
    assert t.saved[r]  # it came from the changelog: its eviction must delete it there


def test_one_hot_blocks_are_grouped_into_uint16_codes_that_decode_exactly() -> None:
    from detector.core.scoring import _one_hot_table, _strides
    from detector.core.state import code_groups

    assert code_groups((4, 6, 6)) == [(4, 6, 6)]
    assert code_groups((256, 256, 4, 3)) == [(256, 256), (4, 3)]
    assert code_groups(()) == []
    rng = np.random.default_rng(0)
    for group in [(4, 6, 6), (3,), (5, 7, 2, 3)]:
        tab = _one_hot_table(group)
        buckets = np.stack([rng.integers(0, b, 50) for b in group], axis=1)
        codes = buckets @ _strides(group)
        expected = np.concatenate([np.eye(b, dtype=np.float32)[buckets[:, j]] for j, b in enumerate(group)], axis=1)
        assert codes.max() < 1 << 16
        assert np.array_equal(tab[codes], expected)
