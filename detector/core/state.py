"""Per-stream state: LSTM (h, c), a ring of the last W normalised feature vectors, derived-feature
state, in preallocated NumPy arrays indexed by slot; a bounded map from stream id to slot.

    table = StreamTable(max_streams=100_000, units=32, window=16, n_features=24, categorical=(4, 6, 6))

The ring is stored compactly: the dense columns as float32 (`ring`); the columns of embedded
categorical fields, which follow them (`embedded` gives their dimensions), as each field's bucket;
and the one-hot blocks at the end of the vector (`categorical` gives their sizes) as one uint16
code per group of blocks (`ring_cat` holds the buckets, then the codes; see `code_groups`). The
default features' 8 embedding columns and 4 one-hot columns cost 6 bytes a position, not 48.
    slots = table.slots_for(["card-1", "card-2"], now=time.time())

When the table is full the least recently seen streams are evicted (by the batch in which they
were last seen); `expire(now)` also evicts streams idle for longer than the TTL. Arrays grow by
doubling up to max_streams, so memory follows the number of live streams, not the bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detector.core.evidence import EVIDENCE_STATE
from detector.core.features import DERIVED_STATE
from detector.core.feedback import ALERT_MEMORY, FEEDBACK_STATE

_INITIAL_CAPACITY = 1024
_CODES = 1 << 16


def code_groups(blocks: tuple[int, ...]) -> list[tuple[int, ...]]:
    """One-hot block sizes grouped in order so that each group's combinations fit a uint16 code
    (code = sum of bucket_j * product of the earlier sizes in the group)."""
    groups: list[list[int]] = []
    size = _CODES
    for b in blocks:
        if size * b > _CODES:
            groups.append([])
            size = 1
        groups[-1].append(b)
        size *= b
    return [tuple(g) for g in groups]


# Per-slot arrays: name -> (shape after the slot axis, dtype, value of a fresh slot). The derived
# features' state (detector.core.features.DERIVED_STATE) sits between the LSTM's and the bookkeeping.
_FIELDS: dict[str, tuple[object, type, float | int | bool]] = {
    "h": ("units", np.float32, 0.0),
    "c": ("units", np.float32, 0.0),
    "ring": ("ring", np.float32, 0.0),  # (W, dense columns)
    "ring_cat": ("ring_cat", np.uint16, 0),  # (W, embedded fields + code groups): buckets, codes
    "count": ((), np.int64, 0),
    **DERIVED_STATE,
    **EVIDENCE_STATE,  # the score's own state (detector.core.evidence)
    **FEEDBACK_STATE,  # what analysts' verdicts did to the stream (detector.core.feedback)
    # Input offset of the last event applied to the stream: a replayed event at or below it
    # (after a rebalance or restart) is skipped instead of being applied to the state twice.
    "offset": ((), np.int64, -1),
    "partition": ((), np.int32, 0),
    "dirty": ((), np.bool_, False),
    # The changelog holds a record of this stream: only then does its eviction need a tombstone
    # (a flood of one-event ids is evicted before any checkpoint and costs the changelog nothing).
    "saved": ((), np.bool_, False),
    "last_seen": ((), np.float64, 0.0),  # clock time, for the idle TTL
    "touched": ((), np.int64, -1),  # batch number, for least-recently-seen eviction
}
# What a stream's changelog record holds, in this order (detector.core.record): everything but the
# bookkeeping of this process (partition, dirty, saved, last_seen, touched).
DURABLE = ("count", "offset", *EVIDENCE_STATE, *FEEDBACK_STATE, *DERIVED_STATE, "h", "c", "ring", "ring_cat")


class StreamTable:
    def __init__(
        self,
        max_streams: int,
        units: int,
        window: int,
        n_features: int,
        idle_ttl_seconds: float = float("inf"),
        sketch_words: int = 0,
        categorical: tuple[int, ...] = (),
        embedded: tuple[int, ...] = (),
        n_numeric: int = 1,
    ) -> None:
        self.max_streams = max_streams
        self.sketch_words, self.n_numeric = sketch_words, n_numeric
        self.categorical, self.embedded = tuple(categorical), tuple(embedded)
        self.n_dense = n_features - sum(categorical) - sum(embedded)
        self.n_groups = len(embedded) + len(code_groups(self.categorical))
        if self.n_dense < 0 or any(not 1 <= b <= 256 for b in categorical):
            raise ValueError("categorical blocks must be 1..256 buckets and fit in n_features")
        self.units, self.window, self.n_features = units, window, n_features
        self.idle_ttl = idle_ttl_seconds
        self.index: dict[str, int] = {}
        self.ids: list[str | None] = []  # slot -> stream id
        self.free: list[int] = []
        self.evictions = 0
        # Streams evicted since the last checkpoint, with their input partition: the changelog
        # gets a tombstone for each, so a restore does not bring them back.
        self.evicted: list[tuple[str, int]] = []
        self.capacity = 0
        self._batch = 0
        self._alloc(min(_INITIAL_CAPACITY, max_streams))

    h: np.ndarray
    c: np.ndarray
    ring: np.ndarray
    ring_cat: np.ndarray
    count: np.ndarray
    last_ts: np.ndarray
    median: np.ndarray
    recent: np.ndarray
    daily: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    evidence: np.ndarray
    s_mean: np.ndarray
    s_var: np.ndarray
    quiet_until: np.ndarray
    confirmed: np.ndarray
    verdict_offset: np.ndarray
    alerts_raised: np.ndarray
    alert_ids: np.ndarray
    known: np.ndarray
    offset: np.ndarray
    partition: np.ndarray
    dirty: np.ndarray
    saved: np.ndarray
    last_seen: np.ndarray
    touched: np.ndarray

    def _shape(self, spec: object) -> tuple[int, ...]:
        if spec == "units":
            return (self.units,)
        if spec == "ring":
            return (self.window, self.n_dense)
        if spec == "ring_cat":
            return (self.window, self.n_groups)
        if spec == "sketch":
            return (self.sketch_words,)
        if spec == "numeric":
            return (self.n_numeric,)
        if spec == "alerts":
            return (ALERT_MEMORY,)
        return ()

    def shape_of(self, name: str) -> tuple[int, ...]:
        """Shape per stream of a field."""
        return self._shape(_FIELDS[name][0])

    def dtype_of(self, name: str) -> np.dtype:
        return np.dtype(_FIELDS[name][1])

    def view(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The derived-feature state of these slots (copies), for FeatureSpec.derive."""
        return {name: getattr(self, name)[slots] for name in DERIVED_STATE}

    def store(self, slots: np.ndarray, state: dict[str, np.ndarray]) -> None:
        """Write back what FeatureSpec.derive returned for these slots."""
        for name in DERIVED_STATE:
            getattr(self, name)[slots] = state[name]

    def _alloc(self, capacity: int) -> None:
        old = self.capacity
        for name, (spec, dtype, fresh) in _FIELDS.items():
            new: np.ndarray = np.full((capacity, *self._shape(spec)), fresh, dtype=dtype)
            if old:
                new[:old] = getattr(self, name)
            setattr(self, name, new)
        self.ids.extend([None] * (capacity - old))
        self.free.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self.index)

    def _reset(self, slot: int | np.ndarray) -> None:
        for name, (_, _, fresh) in _FIELDS.items():
            getattr(self, name)[slot] = fresh

    def _evict(self, k: int) -> None:
        """Evict the k least recently seen streams, never one seen in the current batch."""
        live = np.flatnonzero((self.touched >= 0) & (self.touched < self._batch))
        if len(live) < k:
            raise RuntimeError("state table full of the current batch's streams")  # prevented by config validation
        oldest = live[np.argpartition(self.touched[live], k - 1)[:k]] if k < len(live) else live
        for slot in oldest.tolist():
            sid = self.ids[slot]
            assert sid is not None
            del self.index[sid]
            if self.saved[slot]:
                self.evicted.append((sid, int(self.partition[slot])))
            self.ids[slot] = None
            self.free.append(slot)
        self._reset(oldest)
        self.evictions += len(oldest)

    def slots_for(self, stream_ids: Sequence[str], now: float, partitions: np.ndarray | None = None) -> np.ndarray:
        """Slot of each id (allocating new ones), marking each as seen now and dirty."""
        self._batch += 1
        get = self.index.get
        out = np.fromiter((get(sid, -1) for sid in stream_ids), dtype=np.int64, count=len(stream_ids))
        missing = np.flatnonzero(out < 0).tolist()
        if missing:
            self.touched[out[out >= 0]] = self._batch  # protect the batch's known streams from eviction
            new_ids = list(dict.fromkeys(stream_ids[i] for i in missing))
            short = len(new_ids) - len(self.free)
            while short > 0 and self.capacity < self.max_streams:
                self._alloc(min(self.capacity * 2, self.max_streams))
                short = len(new_ids) - len(self.free)
            if short > 0:
                self._evict(short)
            for sid in new_ids:
                slot = self.free.pop()
                self.index[sid] = slot
                self.ids[slot] = sid
            for i in missing:
                out[i] = self.index[stream_ids[i]]
        self.touched[out] = self._batch
        self.last_seen[out] = now
        self.dirty[out] = True
        if partitions is not None:
            self.partition[out] = partitions
        return out

    def slot_for_restore(self, stream_id: str, partition: int, now: float) -> int:
        """A clean slot for a stream being restored from the changelog (not marked dirty)."""
        slot = int(self.slots_for([stream_id], now)[0])
        self._reset(slot)
        self.touched[slot] = self._batch
        self.last_seen[slot] = now
        self.partition[slot] = partition
        self.saved[slot] = True
        return slot

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

    def take_dirty(self) -> tuple[list[str], np.ndarray, list[int]]:
        """Stream ids, slots and partitions of every stream changed since the last call; clears the
        marks and counts them as saved (the caller writes them to the changelog)."""
        slots = np.flatnonzero(self.dirty)
        self.dirty[slots] = False
        self.saved[slots] = True
        ids = self.ids
        return [ids[s] for s in slots.tolist()], slots, self.partition[slots].tolist()  # type: ignore[misc]

    def expire(self, now: float) -> int:
        """Evict streams idle longer than the TTL; returns how many."""
        idle = np.flatnonzero((self.touched >= 0) & (now - self.last_seen > self.idle_ttl))
        for slot in idle.tolist():
            sid = self.ids[slot]
            assert sid is not None
            if self.saved[slot]:
                self.evicted.append((sid, int(self.partition[slot])))
            self.remove(sid)
        self.evictions += len(idle)
        return len(idle)

    def bytes_per_stream(self) -> int:
        """Bytes of array state per stream (the id map adds ~100 bytes more per stream)."""
        return sum(getattr(self, name)[:1].nbytes for name in _FIELDS)
