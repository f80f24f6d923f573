"""Per-stream state: LSTM (h, c), a ring of the last W normalised feature vectors, derived-feature
state, in preallocated NumPy arrays indexed by slot; a bounded LRU map from stream id to slot.

    table = StreamTable(max_streams=100_000, units=32, window=16, n_features=20)
    slots = table.slots_for(["card-1", "card-2"], now=time.time())

When the table is full the least recently seen stream is evicted; `expire(now)` also evicts
streams idle for longer than the TTL. Arrays grow by doubling up to max_streams, so memory follows
the number of live streams, not the bound.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

_INITIAL_CAPACITY = 1024


class StreamTable:
    def __init__(
        self, max_streams: int, units: int, window: int, n_features: int, idle_ttl_seconds: float = float("inf")
    ) -> None:
        self.max_streams = max_streams
        self.units, self.window, self.n_features = units, window, n_features
        self.idle_ttl = idle_ttl_seconds
        self.index: OrderedDict[str, int] = OrderedDict()
        self.free: list[int] = []
        self.evictions = 0
        # Streams evicted since the last checkpoint, with their input partition: the changelog
        # gets a tombstone for each, so a restore does not bring them back.
        self.evicted: list[tuple[str, int]] = []
        self.ids: list[str | None] = []  # slot -> stream id
        self.capacity = 0
        self._alloc(min(_INITIAL_CAPACITY, max_streams))

    def _alloc(self, capacity: int) -> None:
        old = self.capacity

        def grow(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
            new: np.ndarray = np.zeros((capacity, *shape), dtype=dtype)
            if old:
                new[:old] = getattr(self, name)
            return new

        self.h = grow("h", (self.units,), np.float32)
        self.c = grow("c", (self.units,), np.float32)
        self.ring = grow("ring", (self.window, self.n_features), np.float32)
        self.count = grow("count", (), np.int64)
        self.last_ts = grow("last_ts", (), np.float64)
        self.median = grow("median", (), np.float32)
        self.last_seen = grow("last_seen", (), np.float64)
        self.partition = grow("partition", (), np.int32)
        # Input offset of the last event applied to the stream: a replayed event at or below it
        # (after a rebalance or restart) is skipped instead of being applied to the state twice.
        self.offset = grow("offset", (), np.int64)
        self.dirty = grow("dirty", (), np.bool_)
        self.ids.extend([None] * (capacity - old))
        self.free.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self.index)

    def _reset(self, slot: int) -> None:
        self.h[slot] = 0.0
        self.c[slot] = 0.0
        self.ring[slot] = 0.0
        self.count[slot] = 0
        self.last_ts[slot] = 0.0
        self.median[slot] = 0.0
        self.offset[slot] = -1
        self.dirty[slot] = False

    def _evict_oldest(self) -> None:
        sid, slot = self.index.popitem(last=False)
        self.free.append(slot)
        self.evictions += 1
        self.evicted.append((sid, int(self.partition[slot])))
        self.ids[slot] = None

    def slots_for(self, stream_ids: Sequence[str], now: float, partitions: np.ndarray | None = None) -> np.ndarray:
        """Slot of each id (allocating new ones), marking each as most recently seen and dirty."""
        out = np.empty(len(stream_ids), dtype=np.int64)
        index = self.index
        for i, sid in enumerate(stream_ids):
            slot = index.get(sid)
            if slot is None:
                if not self.free:
                    if self.capacity < self.max_streams:
                        self._alloc(min(self.capacity * 2, self.max_streams))
                    else:
                        self._evict_oldest()
                slot = self.free.pop()
                self._reset(slot)
                index[sid] = slot
                self.ids[slot] = sid
            else:
                index.move_to_end(sid)
            out[i] = slot
        self.last_seen[out] = now
        self.dirty[out] = True
        if partitions is not None:
            self.partition[out] = partitions
        return out

    def slot_for_restore(self, stream_id: str, partition: int, now: float) -> int:
        """A clean slot for a stream being restored from the changelog (not marked dirty)."""
        slot = self.slots_for([stream_id], now)[0]
        self._reset(slot)
        self.partition[slot] = partition
        return int(slot)

    def remove(self, stream_id: str) -> None:
        slot = self.index.pop(stream_id, None)
        if slot is not None:
            self._reset(slot)
            self.ids[slot] = None
            self.free.append(slot)

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget every stream of these input partitions (revoked: another instance owns them)."""
        gone = [sid for sid, slot in self.index.items() if int(self.partition[slot]) in partitions]
        for sid in gone:
            self.remove(sid)
        self.evicted = [(sid, p) for sid, p in self.evicted if p not in partitions]
        return len(gone)

    def take_dirty(self) -> list[tuple[str, int, int]]:
        """(stream id, slot, partition) of every stream changed since the last call; clears the marks."""
        slots = np.flatnonzero(self.dirty)
        self.dirty[slots] = False
        return [(self.ids[s], int(s), int(self.partition[s])) for s in slots]  # type: ignore[misc]

    def expire(self, now: float) -> int:
        """Evict streams idle longer than the TTL; returns how many."""
        n = 0
        while self.index:
            sid, slot = next(iter(self.index.items()))
            if now - self.last_seen[slot] <= self.idle_ttl:
                break
            self._evict_oldest()
            n += 1
        return n

    def state_bytes(self) -> int:
        """Bytes held by the arrays for the live streams (excluding the id map)."""
        per = (
            self.h.itemsize * self.units * 2
            + self.ring.itemsize * self.window * self.n_features
            + self.count.itemsize
            + self.last_ts.itemsize
            + self.median.itemsize
            + self.last_seen.itemsize
        )
        return per * len(self.index)
