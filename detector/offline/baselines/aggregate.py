"""Causal per-stream aggregate features: what an analyst computes per card or per series.

    x, names = aggregate_features(events, spec)     # (n, k), earlier events of the same stream only

Per event, from its stream's earlier events only: each numeric field (as the model transforms
it), its difference from the stream's running median and its z-score against the stream's own
history (Welford mean and variance), "value new for this stream" for every categorical and
novelty field (exact sets, no sketch: a baseline's best shot), log seconds since the stream's
previous event, the stream's event counts over the last hour and day, the hour of day (sin,
cos) and the categorical fields' buckets as numbers where they have at most 16 (channel).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from detector.core.features import FeatureSpec, ParsedEvent

HOUR, DAY = 3600.0, 86400.0
# A stream's first events have no history: its z-score needs this many earlier values.
MIN_HISTORY = 3


class _Stream:
    __slots__ = ("n", "mean", "m2", "median", "last_ts", "seen", "times")

    def __init__(self, k_num: int, k_cat: int) -> None:
        self.n = 0
        self.mean = np.zeros(k_num)
        self.m2 = np.zeros(k_num)
        self.median = np.zeros(k_num)
        self.last_ts = 0.0
        self.seen: list[set[Any]] = [set() for _ in range(k_cat)]
        self.times: deque[float] = deque()


def aggregate_names(spec: FeatureSpec, fields: list[str]) -> list[str]:
    names = []
    for f in spec.numeric:
        names += [f.name, f"{f.name}_vs_median", f"{f.name}_z"]
    names += [f"{c}_is_new" for c in fields]
    names += ["log_seconds_since_previous", "events_1h", "events_24h", "hour_sin", "hour_cos"]
    names += [c.name for c in spec.categorical if c.buckets <= 16]
    return names


def categorical_fields(spec: FeatureSpec) -> list[str]:
    return list(dict.fromkeys([c.name for c in spec.categorical] + list(spec.cfg.novelty) + ["merchant_id"]))


def aggregate_features(events: list[ParsedEvent], spec: FeatureSpec) -> tuple[np.ndarray, list[str]]:
    fields = [f for f in categorical_fields(spec) if any(f in e.record for e in events[:1000])]
    names = aggregate_names(spec, fields)
    small = [i for i, c in enumerate(spec.categorical) if c.buckets <= 16]
    k_num = spec.n_numeric
    out = np.zeros((len(events), len(names)))
    streams: dict[str, _Stream] = {}
    for i, e in enumerate(events):
        st = streams.get(e.stream_id)
        if st is None:
            st = streams[e.stream_id] = _Stream(k_num, len(fields))
        v = np.asarray(e.numeric, np.float64)
        row = []
        for j in range(k_num):
            sd = np.sqrt(st.m2[j] / (st.n - 1)) if st.n > 1 else 0.0
            z = (v[j] - st.mean[j]) / max(sd, 1e-3) if st.n >= MIN_HISTORY else 0.0
            row += [v[j], v[j] - st.median[j] if st.n else 0.0, z]
        row += [float(st.n > 0 and e.record.get(f) not in st.seen[k]) for k, f in enumerate(fields)]
        while st.times and st.times[0] < e.ts - DAY:
            st.times.popleft()
        in_hour = sum(1 for t in st.times if t >= e.ts - HOUR)
        hour = 2 * np.pi * (e.ts % DAY) / DAY
        row += [np.log1p(max(e.ts - st.last_ts, 0.0)) if st.n else np.log1p(DAY), in_hour, len(st.times)]
        row += [np.sin(hour), np.cos(hour)]
        row += [float(e.buckets[k]) for k in small]
        out[i] = row
        # update the stream's history after the event's features (causal)
        st.n += 1
        d = v - st.mean
        st.mean += d / st.n
        st.m2 += d * (v - st.mean)
        st.median = v.copy() if st.n == 1 else st.median + 0.2 * np.clip(v - st.median, -0.5, 0.5)
        st.last_ts = e.ts
        st.times.append(e.ts)
        for k, f in enumerate(fields):
            st.seen[k].add(e.record.get(f))
    return out, names
