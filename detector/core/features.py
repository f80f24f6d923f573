"""Features from config: decode and validate one event, then turn a batch into a float32 matrix.

    spec = FeatureSpec.from_config(settings.features)
    parsed = spec.parse(raw_bytes)            # ParsedEvent, or raises InvalidEvent(reason, detail)
    base = spec.base_matrix([parsed, ...])    # (n, F) with the per-stream columns left NaN

Columns, in order: numeric fields (after transform and clipping), per-stream derived features
(log seconds since the stream's previous event; log amount relative to the stream's running
median), time features (hour-of-day and day-of-week as sin/cos), the learned embedding of each
embedded categorical field, then one hashed one-hot block per other categorical field. The
per-stream columns need the stream's state and are filled in order by `derive` (called by the
scorer), which is why they are NaN in `base_matrix`. Embedding columns need the model's tables:
`spec.with_embeddings(artifact.embeddings)` before `base_matrix`.
"""

from __future__ import annotations

import copy
import math
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import numpy as np
import orjson

from detector.config import FeaturesConfig
from detector.exceptions import InvalidEvent

MAX_ID_LENGTH = 256
# The running median moves towards each value with this gain (0.2 follows a stable level within
# ~10 events), by a difference clipped to `features.relative_to_median_step` standard deviations
# of the source column on the training data (robust to one-off outliers, in the column's own
# scale). Models trained before that clip it at MEDIAN_MAX_STEP raw units: fine for log amounts,
# but it held the median of a sensor's current, in amperes, 2 days behind a machine back to normal
# after a fault, alerting all the while.
MEDIAN_GAIN = 0.2
MEDIAN_MAX_STEP = 0.5
# Each novelty field's per-stream sketch: a Bloom filter of 256 bits (4 x u64) with 2 hash
# functions (the low and high byte of the value's 16-bit hash). After m distinct values its false
# positive rate is (1 - e^(-2m/256))^2: 1.0% at 15 values, 4.4% at 30, 14% at 60 (a card's usual
# merchants and categories are a few dozen); 32 bytes per field and stream.
SKETCH_BITS = 256
SKETCH_WORDS = SKETCH_BITS // 64
_HASH_CACHE_LIMIT = 100_000  # distinct categorical values cached; beyond it we hash each time
_MISSING = object()


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    stream_id: str
    event_id: str
    ts: float  # seconds since the Unix epoch, UTC
    numeric: tuple[float, ...]
    buckets: tuple[int, ...]
    record: dict[str, Any]
    marks: tuple[int, ...] = ()  # per novelty field: the value's 16-bit hash (two sketch bit indices)


def parse_timestamp(value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidEvent("wrong_type", "timestamp is a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise InvalidEvent("non_finite", "timestamp is not finite")
        return float(value)
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidEvent("bad_timestamp", "timestamp must be ISO-8601 text or epoch seconds")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("bad_timestamp", f"not ISO-8601: {value[:40]!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class FeatureSpec:
    def __init__(self, cfg: FeaturesConfig) -> None:
        self.cfg = cfg
        self.numeric = cfg.numeric
        self.categorical = cfg.categorical
        names = [f.name for f in cfg.numeric]
        if cfg.log_seconds_since_previous:
            names.append("log_seconds_since_previous")
        if cfg.recent_events_window_seconds > 0:
            names.append("recent_events")
        if cfg.relative_to_median:
            names.append(f"{cfg.relative_to_median}_vs_median")
        if cfg.day_events_window_seconds > 0:
            names.append("day_events")
        self.z_col = len(names)
        if cfg.stream_profile_events > 0:
            names += [f"{f.name}_stream_z" for f in cfg.numeric]
        self.new_col = len(names)
        names += [f"{f}_is_new" for f in cfg.novelty]
        self.n_novelty = len(cfg.novelty)
        self.sketch_words = self.n_novelty * SKETCH_WORDS  # u64 words of per-stream novelty state
        if cfg.hour_of_day:
            names += ["hour_sin", "hour_cos"]
        if cfg.day_of_week:
            names += ["dow_sin", "dow_cos"]
        self.n_numeric = len(cfg.numeric)
        self.dt_col = names.index("log_seconds_since_previous") if cfg.log_seconds_since_previous else -1
        self.recent_col = names.index("recent_events") if cfg.recent_events_window_seconds > 0 else -1
        self.med_col = names.index(f"{cfg.relative_to_median}_vs_median") if cfg.relative_to_median else -1
        self.med_src = [f.name for f in cfg.numeric].index(cfg.relative_to_median) if cfg.relative_to_median else -1
        self.day_col = names.index("day_events") if cfg.day_events_window_seconds > 0 else -1
        self.n_z = len(cfg.numeric) if cfg.stream_profile_events > 0 else 0
        self.time_col = len(names) - 2 * (cfg.hour_of_day + cfg.day_of_week)
        # Categorical fields, by their index in ParsedEvent.buckets: embedded ones are dense columns
        # (before the one-hot blocks, which must come last), the others one-hot blocks.
        self.embedded: list[tuple[int, int, int]] = []  # (field index, first column, dimensions)
        for i, c in enumerate(cfg.categorical):
            if c.embedding:
                self.embedded.append((i, len(names), c.embedding))
                names += [f"{c.name}~{k}" for k in range(c.embedding)]
        self.one_hot_index = [i for i, c in enumerate(cfg.categorical) if not c.embedding]
        self.cat_offsets: list[int] = []
        for i in self.one_hot_index:
            self.cat_offsets.append(len(names))
            names += [f"{cfg.categorical[i].name}={b}" for b in range(cfg.categorical[i].buckets)]
        # The embedding tables (buckets, dimensions) of the embedded fields, in order; None until
        # bound to a model's (`with_embeddings`).
        self.embeddings: tuple[np.ndarray, ...] | None = None if self.embedded else ()
        # The running median's clip per event, in raw units: `relative_to_median_step` standard
        # deviations of its source column, fitted at training time (`with_median_step`).
        self.median_step = MEDIAN_MAX_STEP
        self.names: tuple[str, ...] = tuple(names)
        self.n_features = len(names)
        # Flat plans for the per-event hot path (validate), built once.
        self._stream_field, self._event_id_field, self._time_field = (
            cfg.stream_field,
            cfg.event_id_field,
            cfg.time_field,
        )
        self._num_plan = [(f.name, f.transform == "log1p", f.clip) for f in cfg.numeric]
        # Hashed text fields: (name, buckets, cache of value -> bucket). Novelty fields hash to 16
        # bits: two 8-bit indices into their stream's 256-bit sketch.
        self._cat_plan: list[tuple[str, int, dict[str, int]]] = [(c.name, c.buckets, {}) for c in cfg.categorical]
        self._new_plan: list[tuple[str, int, dict[str, int]]] = [(f, 1 << 16, {}) for f in cfg.novelty]

    @classmethod
    def from_config(cls, cfg: FeaturesConfig) -> FeatureSpec:
        return cls(cfg)

    def one_hot_blocks(self) -> tuple[int, ...]:
        """Sizes of the one-hot blocks, which are the last columns of the vector, in order."""
        return tuple(self.categorical[i].buckets for i in self.one_hot_index)

    def fit_median_step(self, events: list[ParsedEvent]) -> float | None:
        """`relative_to_median_step` standard deviations of the running median's source column
        over `events` (training data); None when the spec has no running median."""
        if self.med_col < 0 or not events:
            return None
        sd = float(np.std(self.base_matrix(events)[:, self.med_src]))
        return self.cfg.relative_to_median_step * sd if np.isfinite(sd) and sd > 0 else MEDIAN_MAX_STEP

    def with_median_step(self, step: float | None) -> FeatureSpec:
        """This spec with a model's running-median step (None: the default, as models before it)."""
        bound = copy.copy(self)
        bound.median_step = MEDIAN_MAX_STEP if step is None else float(step)
        return bound

    def with_embeddings(self, tables: dict[str, np.ndarray] | None) -> FeatureSpec:
        """This spec with the embedding tables of a model (name -> (buckets, dimensions))."""
        if not self.embedded:
            return self
        tables = tables or {}
        out = []
        for i, _, dim in self.embedded:
            c = self.categorical[i]
            if c.name not in tables:
                raise ValueError(f"no embedding table for the categorical field {c.name}")
            t = np.asarray(tables[c.name], dtype=np.float32)
            if t.shape != (c.buckets, dim) or not np.isfinite(t).all():
                raise ValueError(f"embedding table of {c.name}: shape {t.shape}, expected ({c.buckets}, {dim}), finite")
            out.append(t)
        bound = copy.copy(self)
        bound.embeddings = tuple(out)
        return bound

    def buckets_of(self, events: list[ParsedEvent]) -> np.ndarray:
        """(n, blocks) each event's bucket in each one-hot block."""
        return _columns([e.buckets for e in events], len(self.categorical), np.int64)

    def one_hot_columns(self) -> np.ndarray:
        """Boolean mask of the 0/1 columns (categorical one-hot blocks, novelty flags): not standardised."""
        mask = np.zeros(self.n_features, dtype=bool)
        mask[self.new_col : self.new_col + self.n_novelty] = True
        for off, i in zip(self.cat_offsets, self.one_hot_index, strict=True):
            mask[off : off + self.categorical[i].buckets] = True
        return mask

    def describe(self) -> dict[str, Any]:
        """What a model artifact records to detect a mismatch with the running config."""
        return {"config": self.cfg.model_dump(mode="json"), "names": list(self.names)}

    @staticmethod
    def _hashed(
        rec: dict[str, Any], plan: list[tuple[str, int, dict[str, int]]], optional: bool = False
    ) -> tuple[int, ...]:
        """Each planned text field's bucket; non-text values are invalid, and so are missing ones
        unless `optional` (novelty fields: a missing value counts as the empty one)."""
        out = []
        for name, n, cache in plan:
            v = rec.get(name)
            if v is None and optional:
                v = ""
            b = cache.get(v) if type(v) is str else None
            if b is None:
                if v is None:
                    raise InvalidEvent("missing_field", name)
                if not isinstance(v, str):
                    raise InvalidEvent("wrong_type", f"{name} must be a string")
                # crc32, not hash(): Python salts str hashes per process, models must not depend on it.
                b = zlib.crc32(v.encode("utf-8", "surrogatepass")) % n
                if len(cache) < _HASH_CACHE_LIMIT:
                    cache[v] = b
            out.append(b)
        return tuple(out)

    def decode(self, raw: bytes, max_bytes: int) -> dict[str, Any]:
        if len(raw) > max_bytes:
            raise InvalidEvent("oversized", f"{len(raw)} bytes > max_event_bytes {max_bytes}")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent("undecodable", str(exc)[:120]) from None
        if not isinstance(obj, dict):
            raise InvalidEvent("not_an_object", f"top level is {type(obj).__name__}")
        return obj

    def _id(self, rec: dict[str, Any], key: str) -> str:
        v = rec.get(key)
        if type(v) is not str:  # the common case first; ints are accepted as ids too
            if v is None:
                raise InvalidEvent("missing_field", key)
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvalidEvent("wrong_type", f"{key} must be a string")
            v = str(v)
        if not v or len(v) > MAX_ID_LENGTH:
            raise InvalidEvent("bad_id", f"{key} must have 1..{MAX_ID_LENGTH} characters")
        return v

    def validate(self, rec: dict[str, Any]) -> ParsedEvent:
        """Check one decoded event against the schema; the hot path of the daemon (~3 us)."""
        sid = self._id(rec, self._stream_field)
        eid = self._id(rec, self._event_id_field)
        tv = rec.get(self._time_field, _MISSING)
        if tv is _MISSING:
            raise InvalidEvent("missing_field", self._time_field)
        ts = parse_timestamp(tv)
        nums = []
        for name, log1p, clip in self._num_plan:
            v = rec.get(name)
            t = type(v)
            if t is not float and t is not int:
                if v is None:
                    raise InvalidEvent("missing_field", name)
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise InvalidEvent("wrong_type", f"{name} must be a number")
            x = float(v)  # type: ignore[arg-type]
            if not math.isfinite(x):
                raise InvalidEvent("non_finite", name)
            if log1p:
                if x <= -1:
                    raise InvalidEvent("out_of_range", f"{name} must be > -1 for log1p")
                x = math.log1p(x)
            if clip is not None:
                x = min(max(x, clip[0]), clip[1])
            nums.append(x)
        buckets = self._hashed(rec, self._cat_plan)
        marks = self._hashed(rec, self._new_plan, optional=True) if self._new_plan else ()
        return ParsedEvent(sid, eid, ts, tuple(nums), buckets, rec, marks)

    def parse(self, raw: bytes, max_bytes: int = 1 << 20) -> ParsedEvent:
        return self.validate(self.decode(raw, max_bytes))

    def base_matrix(
        self, events: list[ParsedEvent], ts: np.ndarray | None = None, buckets: np.ndarray | None = None
    ) -> np.ndarray:
        """Stateless columns of a batch; per-stream columns are NaN until `derive` fills them.
        `ts`, `buckets`: the events' timestamps and `buckets_of`, when the caller has them already."""
        n = len(events)
        x = np.full((n, self.n_features), np.nan, dtype=np.float32)
        if n == 0:
            return x
        if self.n_numeric:
            x[:, : self.n_numeric] = _columns([e.numeric for e in events], self.n_numeric, np.float32)
        if ts is None:
            ts = np.array([e.ts for e in events])
        col = self.time_col
        if self.cfg.hour_of_day:
            a = 2 * np.pi * (ts % 86400.0) / 86400.0
            x[:, col], x[:, col + 1] = np.sin(a), np.cos(a)
            col += 2
        if self.cfg.day_of_week:
            # 1970-01-01 was a Thursday: shift so Monday is day 0.
            a = 2 * np.pi * (((ts / 86400.0) + 3) % 7) / 7
            x[:, col], x[:, col + 1] = np.sin(a), np.cos(a)
        if self.categorical:
            b = self.buckets_of(events) if buckets is None else buckets
            rows = np.arange(n)
            for i, off in zip(self.one_hot_index, self.cat_offsets, strict=True):
                x[:, off : off + self.categorical[i].buckets] = 0.0
                x[rows, off + b[:, i]] = 1.0
            if self.embedded:
                if self.embeddings is None:
                    raise RuntimeError("embedded categorical fields need the model's tables: spec.with_embeddings()")
                for (i, off, dim), table in zip(self.embedded, self.embeddings, strict=True):
                    x[:, off : off + dim] = table[b[:, i]]
        return x

    def marks(self, events: list[ParsedEvent]) -> np.ndarray:
        """(n, novelty fields) bit of each event's value in its stream's sets."""
        return _columns([e.marks for e in events], self.n_novelty, np.uint64)

    def state_shape(self, spec: object) -> tuple[int, ...]:
        """Shape per stream of a DERIVED_STATE field."""
        if spec == "sketch":
            return (self.sketch_words,)
        if spec == "numeric":
            return (self.n_numeric,)
        return ()

    def fresh_state(self, n: int) -> dict[str, np.ndarray]:
        """The derived-feature state of n new streams."""
        return {
            name: np.full((n, *self.state_shape(shape)), fresh, dtype=dtype)
            for name, (shape, dtype, fresh) in DERIVED_STATE.items()
        }

    def derive(
        self,
        x: np.ndarray,
        ts: np.ndarray,
        state: dict[str, np.ndarray],
        seen: np.ndarray,
        marks: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Fill the per-stream columns of rows that each belong to a distinct stream.

        `state` holds those streams' DERIVED_STATE before these events (one row each); returns
        their new state. A stream's first event gets NaN (normalised to the mean, i.e. 0).
        `recent` and `daily` are exponentially decayed counts of the stream's events (time
        constants `recent_events_window_seconds`, `day_events_window_seconds`): a burst shows in
        them long after the single gap between two of its events would. `known` holds each
        stream's novelty sketches (SKETCH_WORDS u64 per field); `marks` the events' 16-bit
        hashes. `mean`, `var` and `n` are the stream's own decayed statistics of each numeric
        field, for its z-scores.
        """
        new = dict(state)
        last_ts = state["last_ts"]
        dt = np.maximum(ts - last_ts, 0.0)
        if self.dt_col >= 0:
            x[:, self.dt_col] = np.where(seen, np.log1p(dt), np.nan)
        for col, key, tau in (
            (self.recent_col, "recent", self.cfg.recent_events_window_seconds),
            (self.day_col, "daily", self.cfg.day_events_window_seconds),
        ):
            if col >= 0:
                decayed = np.where(seen, state[key] * np.exp(-dt / tau), 0.0)
                x[:, col] = np.where(seen, np.log1p(decayed), np.nan)
                new[key] = (decayed + 1.0).astype(np.float32)
        if self.med_col >= 0:
            median = state["median"]
            v = x[:, self.med_src]
            x[:, self.med_col] = np.where(seen, v - median, np.nan)
            step = np.clip(v - median, -self.median_step, self.median_step) * MEDIAN_GAIN
            new["median"] = np.where(seen, median + step, v).astype(np.float32)
        if self.n_z:
            new["mean"], new["var"], new["n"], z = self._stream_z(x[:, : self.n_numeric], state, seen)
            x[:, self.z_col : self.z_col + self.n_z] = z
        if self.n_novelty and marks is not None:
            known = np.where(seen[:, None], state["known"], np.uint64(0))
            before = known.copy()
            rows = np.arange(len(x))[:, None]
            first = SKETCH_WORDS * np.arange(self.n_novelty)
            is_new = np.zeros((len(x), self.n_novelty), dtype=bool)
            for index in (marks & np.uint64(255), marks >> np.uint64(8)):  # the two hash functions
                word = first + (index >> np.uint64(6)).astype(np.intp)
                bit = np.left_shift(np.uint64(1), index & np.uint64(63))
                is_new |= (before[rows, word] & bit) == 0
                known[rows, word] |= bit
            x[:, self.new_col : self.new_col + self.n_novelty] = np.where(seen[:, None], is_new, np.nan)
            new["known"] = known
        new["last_ts"] = ts.copy()
        return new

    def _stream_z(
        self, v: np.ndarray, state: dict[str, np.ndarray], seen: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each value's z against its stream's decayed mean and variance, and the updated ones.
        Weights 1/n until n reaches `stream_profile_events` (a plain running mean at first), then
        fixed; the update sees the value winsorised at Z_WINSOR sd (once there are 3 events)."""
        n = np.where(seen, state["n"], 0.0)[:, None]
        mean, var = state["mean"], state["var"]
        sd = np.sqrt(np.maximum(var, 0.0)) + Z_FLOOR
        ready = n >= MIN_Z_EVENTS
        z = np.where(ready, (v - mean) / sd, np.nan)
        vc = np.where(ready, mean + np.clip(v - mean, -Z_WINSOR * sd, Z_WINSOR * sd), v)
        a = 1.0 / np.minimum(n + 1.0, self.cfg.stream_profile_events)
        d = vc - np.where(n > 0, mean, vc)
        new_mean = np.where(n > 0, mean + a * d, vc)
        new_var = np.where(n > 0, (1.0 - a) * (var + a * d * d), 0.0)
        return new_mean.astype(np.float32), new_var.astype(np.float32), (n[:, 0] + 1.0).astype(np.float32), z


# A stream's z-scores need this many earlier events; values beyond Z_WINSOR sd update its
# statistics as if they were at Z_WINSOR sd; Z_FLOOR (in the field's units after its transform)
# keeps a stream that always sends the same value from dividing by zero.
MIN_Z_EVENTS = 3
Z_WINSOR = 4.0
Z_FLOOR = 1e-3

# The per-stream state the derived features keep, one row per stream: name -> (shape, dtype, the
# value of a new stream). Shapes: () one value, "numeric" one per numeric field, "sketch" the
# novelty sketches' words. The stream table and its changelog record take their fields from here,
# so a new per-stream feature is declared here, computed in FeatureSpec.derive and configured.
DERIVED_STATE: dict[str, tuple[object, type, float | int]] = {
    "last_ts": ((), np.float64, 0.0),
    "median": ((), np.float32, 0.0),
    "recent": ((), np.float32, 0.0),
    "daily": ((), np.float32, 0.0),
    "n": ((), np.float32, 0.0),
    "mean": ("numeric", np.float32, 0.0),
    "var": ("numeric", np.float32, 0.0),
    "known": ("sketch", np.uint64, 0),
}


def _columns(rows: list[tuple[Any, ...]], k: int, dtype: type) -> np.ndarray:
    """(n, k) array of n k-tuples: `np.fromiter` over the chained values is ~2x `np.array` on
    tuples (172 -> 68 us for 1,024 events, measured)."""
    return np.fromiter(chain.from_iterable(rows), dtype, len(rows) * k).reshape(len(rows), k)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
