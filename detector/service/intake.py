"""Intake: a polled batch of records into the events to score and the dead letters to publish.

    batch = intake(records, spec, settings.runtime, [table], now=time.time(), verdicts_topic="alerts.verdicts")
    batch.events, batch.partitions, batch.offsets     # valid, not yet applied, in input order
    batch.applied[k]                                  # of those, already applied to tables[k]
    batch.verdicts                                    # (record, Verdict) of the verdicts topic
    batch.dead                                        # (record, InvalidEvent) each: bad events
    batch.bad_verdicts                                # ... and bad verdicts (`verdict_records` in all)
    batch.already_applied                             # skipped: the restored state holds them

Pure: no Kafka, no metrics, no clock of its own. Decoding and validation are the feature spec's
(`FeatureSpec.parse`); intake adds what the daemon knows beyond one event: the clock-skew window
and each stream's applied offset (an event at or below it was scored by this group before a
rebalance or restart, and its effect is in the restored state: it is skipped, not re-applied).
With a challenger's table besides the champion's, an event is skipped when every table applied
it; `applied[k]` marks those kept that table k applied already (a crash between two tables'
changelog writes leaves one ahead of the other).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from detector.config import RuntimeConfig
from detector.core.features import FeatureSpec, ParsedEvent
from detector.core.feedback import Verdict, parse_verdict
from detector.core.state import StreamTable
from detector.exceptions import InvalidEvent
from detector.kafka.base import Record

# The dead-letter reason's detail is cut to this many characters (a header, not a payload).
DETAIL_CHARS = 500


@dataclass
class Intake:
    events: list[ParsedEvent] = field(default_factory=list)
    partitions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dead: list[tuple[Record, InvalidEvent]] = field(default_factory=list)
    verdicts: list[tuple[Record, Verdict]] = field(default_factory=list)
    bad_verdicts: list[tuple[Record, InvalidEvent]] = field(default_factory=list)
    verdict_records: int = 0
    already_applied: int = 0
    applied: list[np.ndarray] = field(default_factory=list)


def intake(
    records: list[Record],
    spec: FeatureSpec,
    rt: RuntimeConfig,
    tables: Sequence[StreamTable],
    now: float,
    verdicts_topic: str | None = None,
) -> Intake:
    """Records of `verdicts_topic` are verdicts (detector.core.feedback); the others events."""
    out = Intake()
    index, applied = tables[0].index, tables[0].offset
    others = tables[1:]
    first_done: list[bool] = []
    events, parts, offs, dead = out.events, [], [], out.dead
    early, late = now + rt.max_future_seconds, now - rt.max_past_seconds
    for r in records:
        if r.topic == verdicts_topic:
            out.verdict_records += 1
            try:
                out.verdicts.append((r, parse_verdict(r.value or b"", rt.max_event_bytes)))
            except InvalidEvent as exc:
                out.bad_verdicts.append((r, exc))
            continue
        try:
            if r.value is None:
                raise InvalidEvent("empty", "message has no value")
            ev = spec.parse(r.value, rt.max_event_bytes)
            if ev.ts > early or ev.ts < late:
                raise InvalidEvent("clock_skew", f"timestamp {ev.ts:.0f} too far from now {now:.0f}")
        except InvalidEvent as exc:
            dead.append((r, exc))
            continue
        slot = index.get(ev.stream_id)
        done = slot is not None and r.offset <= applied[slot]
        if done and all(_applied(t, ev.stream_id, r.offset) for t in others):
            out.already_applied += 1
            continue
        if others:
            first_done.append(done)
        events.append(ev)
        parts.append(r.partition)
        offs.append(r.offset)
    out.partitions = np.array(parts, dtype=np.int32)
    out.offsets = np.array(offs, dtype=np.int64)
    n = len(events)
    out.applied = [np.array(first_done, dtype=bool) if others else np.zeros(n, bool)]
    for t in others:
        out.applied.append(np.array([_applied(t, e.stream_id, o) for e, o in zip(events, offs, strict=True)], bool))
    return out


def _applied(table: StreamTable, stream_id: str, offset: int) -> bool:
    slot = table.index.get(stream_id)
    return slot is not None and offset <= table.offset[slot]


def dead_letter_headers(r: Record, exc: InvalidEvent) -> list[tuple[str, bytes]]:
    """The headers a dead letter carries: why, and where the original message was."""
    return [
        ("reason", exc.reason.encode()),
        ("detail", exc.detail[:DETAIL_CHARS].encode("utf-8", "replace")),
        ("source_topic", r.topic.encode()),
        ("source_partition", str(r.partition).encode()),
        ("source_offset", str(r.offset).encode()),
    ]
