"""Training data from the input topic: `detector train --topic events --since ... [--until ...]`.

    h = harvest(client, settings, spec, "events", since_ms, until_ms, max_streams, max_events, seed)
    h.dataset                     # the normal events kept, each stream whole and in its order
    h.source                      # what the model's metadata records (topic, range, offsets, exclusions)

Kafka's offsets-for-times bounds the read on every partition ([first offset at or after
`since`, first offset at or after `until`)), then each partition is read once up to that end.
Events go through the daemon's own decoding and validation: bad ones are counted by reason,
never fatal. A stream with a `fraud` verdict on the verdicts topic, or an event labelled fraud
(its `label` field not 0), is left out whole. Memory is bounded: at most `max_streams` streams
and `max_events` events are held, sampled as whole streams (those of the smallest seeded hash
of their id: a uniform sample, the same for the same seed, and never a stream cut mid-way).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from detector.config import Settings
from detector.core.features import FeatureSpec, ParsedEvent
from detector.core.feedback import parse_verdict
from detector.exceptions import ConfigError, InvalidEvent
from detector.kafka.base import Client
from detector.offline.dataset import Dataset

# A whole read of one partition may take this long (a month of a busy topic on a slow broker).
READ_TIMEOUT_S = 3600.0
# The metadata lists the ids of at most this many excluded streams (and counts them all).
MAX_IDS_LISTED = 1000


def parse_time(text: str, key: str) -> int:
    """ISO 8601 (`2026-11-01T00:00Z`; no zone means UTC) to epoch milliseconds; a ConfigError
    naming `key` otherwise."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{key}: '{text}' is not an ISO 8601 time such as 2026-11-01T00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


@dataclass
class Harvest:
    dataset: Dataset
    source: dict[str, Any]


@dataclass
class _Sample:
    """Whole streams of the smallest hashes, within the caps."""

    max_streams: int
    max_events: int
    seed: int
    streams: dict[str, list[ParsedEvent]] = field(default_factory=dict)
    heap: list[tuple[int, str]] = field(default_factory=list)  # (-hash, stream id): the largest on top
    dropped: set[str] = field(default_factory=set)
    events: int = 0

    def rank(self, sid: str) -> int:
        return int.from_bytes(hashlib.blake2b(f"{self.seed}:{sid}".encode(), digest_size=8).digest(), "big")

    def add(self, ev: ParsedEvent) -> None:
        sid = ev.stream_id
        if sid in self.dropped:
            return
        held = self.streams.get(sid)
        if held is None:
            held = self.streams[sid] = []
            heapq.heappush(self.heap, (-self.rank(sid), sid))
        held.append(ev)
        self.events += 1
        while len(self.streams) > self.max_streams or self.events > self.max_events:
            _, out = heapq.heappop(self.heap)
            self.events -= len(self.streams.pop(out))
            self.dropped.add(out)  # a stream sampled out stays out: never cut mid-way


def fraud_streams(client: Client, topic: str, max_bytes: int) -> set[str]:
    """Stream ids with a `fraud` verdict anywhere on the verdicts topic (unreadable ones skipped)."""
    out: set[str] = set()
    for p in range(client.admin().partition_count(topic)):
        for _, value, _ in client.read_range(topic, p, None, None, READ_TIMEOUT_S):
            try:
                v = parse_verdict(value or b"", max_bytes)
            except InvalidEvent:
                continue
            if v.verdict == "fraud":
                out.add(v.stream_id)
    return out


def harvest(
    client: Client,
    settings: Settings,
    spec: FeatureSpec,
    topic: str,
    since_ms: int | None,
    until_ms: int | None,
    max_streams: int,
    max_events: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> Harvest:
    """The normal events of `topic` between the two times (see the module doc); `progress(read,
    to read)` after every 10,000 records."""
    if client.admin().partition_count(topic) == 0:
        raise ConfigError(f"--topic: {topic} does not exist on {settings.kafka.bootstrap_servers}")
    starts = client.offsets_at(topic, since_ms or 0)
    ends = client.offsets_at(topic, until_ms)
    total = sum(max(ends[p] - starts[p], 0) for p in starts)
    fraud = fraud_streams(client, settings.kafka.verdicts_topic, settings.runtime.max_event_bytes)
    sample = _Sample(max_streams, max_events, seed)
    invalid: dict[str, int] = {}
    labelled: set[str] = set()
    verdict_events = 0
    fraud_seen: set[str] = set()
    read = 0
    max_bytes = settings.runtime.max_event_bytes
    for p in sorted(starts):
        if ends[p] <= starts[p]:
            continue
        for _, value, _ in client.read_range(topic, p, starts[p], ends[p], READ_TIMEOUT_S):
            read += 1
            if progress is not None and read % 10_000 == 0:
                progress(read, total)
            try:
                if value is None:
                    raise InvalidEvent("empty", "message has no value")
                ev = spec.parse(value, max_bytes)
            except InvalidEvent as exc:
                invalid[exc.reason] = invalid.get(exc.reason, 0) + 1
                continue
            sid = ev.stream_id
            if sid in fraud:
                verdict_events += 1
                fraud_seen.add(sid)
                continue
            label = ev.record.get("label")
            if label not in (None, 0, "0", False):
                labelled.add(sid)
            sample.add(ev)
    if progress is not None:
        progress(read, total)
    labelled_events = sum(len(sample.streams.pop(sid, [])) for sid in labelled)
    events = [ev for evs in sample.streams.values() for ev in evs]
    source = {
        "topic": topic,
        "since": None if since_ms is None else _iso(since_ms),
        "until": None if until_ms is None else _iso(until_ms),
        "offsets": {str(p): [starts[p], ends[p]] for p in sorted(starts)},
        "records_read": read,
        "invalid": dict(sorted(invalid.items())),
        "excluded": {
            "fraud_verdict_streams": len(fraud_seen),
            "fraud_verdict_stream_ids": sorted(fraud_seen)[:MAX_IDS_LISTED],
            "fraud_verdict_events": verdict_events,
            "fraud_label_streams": len(labelled),
            "fraud_label_events": labelled_events,
            "sampled_out_streams": len(sample.dropped),
        },
        "sample": {"max_streams": max_streams, "max_events": max_events, "seed": seed},
    }
    return Harvest(Dataset(events, invalid), source)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
