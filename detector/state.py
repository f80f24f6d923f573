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

    def _evict_oldest(self) -> None:
        _, slot = self.index.popitem(last=False)
        self.free.append(slot)
        self.evictions += 1

    def slots_for(self, stream_ids: Sequence[str], now: float) -> np.ndarray:
        """Slot of each id (allocating new ones), marking each as most recently seen."""
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
            else:
                index.move_to_end(sid)
            out[i] = slot
        self.last_seen[out] = now
        return out

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
