"""Analysts' verdicts on alerts, and what they do to a stream. Pure.

    v = parse_verdict(raw, max_bytes)                 # Verdict, or InvalidEvent("bad_verdict", ...)
    reason = apply_verdict(table, v, offset, quiet_seconds)   # None, "already_applied" or a DLQ reason
    remember_alerts(table, slots, alert_ids)          # each stream keeps its last ALERT_MEMORY alert ids

A verdict is JSON on the verdicts topic (detector/schemas/verdict.schema.json), keyed by stream
id: `legit` resets the stream's evidence and quiets its alerts for `feedback.legit_quiet_seconds`
from `decided_at` (unless an event scores at the critical level); `fraud` marks the stream, and
its later alerts carry `confirmed_stream: true`; `unsure` is counted, nothing more. The effects
are fields of the stream's durable state (FEEDBACK_STATE): checkpointed and restored with it.
A verdict for a stream this instance does not hold, or for an alert that stream did not raise
lately, is refused with a reason (the dead-letter topic keeps it).
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import orjson

from detector.exceptions import InvalidEvent

VERDICTS = ("fraud", "legit", "unsure")
# Each stream remembers the CRC-32 of its last this many alert ids, so a verdict can be checked
# against the alerts the stream really raised (32 bytes a stream). A verdict for an older alert
# (a chargeback weeks later on a busy card) goes to the dead-letter topic, where it is kept.
ALERT_MEMORY = 8
MAX_TEXT = 1000  # characters of analyst and note kept (a header's worth, not a document)

# Per-slot arrays (as detector.core.state._FIELDS): name -> (shape, dtype, value of a fresh slot).
FEEDBACK_STATE: dict[str, tuple[object, type, float | int | bool]] = {
    "quiet_until": ((), np.float64, 0.0),  # event time before which non-critical alerts are quiet
    "confirmed": ((), np.bool_, False),  # a fraud verdict was given on this stream
    "verdict_offset": ((), np.int64, -1),  # verdicts-topic offset of the last verdict applied
    "alerts_raised": ((), np.int64, 0),
    "alert_ids": ("alerts", np.uint32, 0),  # CRC-32 of the last ALERT_MEMORY alert ids, a ring
}


class Verdict(NamedTuple):
    alert_id: str
    stream_id: str
    verdict: str
    analyst: str
    note: str
    decided_at: float  # epoch seconds


def _text(d: dict[str, Any], key: str, required: bool = True) -> str:
    v = d.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v):
        raise InvalidEvent("bad_verdict", f"{key!r} must be a non-empty string")
    return v[:MAX_TEXT]


def parse_verdict(raw: bytes, max_bytes: int) -> Verdict:
    if len(raw) > max_bytes:
        raise InvalidEvent("bad_verdict", f"{len(raw)} bytes, more than {max_bytes}")
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("bad_verdict", f"not JSON: {exc}") from None
    if not isinstance(d, dict):
        raise InvalidEvent("bad_verdict", "not a JSON object")
    verdict = d.get("verdict")
    if verdict not in VERDICTS:
        raise InvalidEvent("bad_verdict", f"'verdict' must be one of {', '.join(VERDICTS)}")
    try:
        when = datetime.fromisoformat(str(d.get("decided_at")).replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise InvalidEvent("bad_verdict", "'decided_at' must be an ISO-8601 time with a zone")
    ts = when.timestamp()
    return Verdict(
        _text(d, "alert_id"), _text(d, "stream_id"), verdict, _text(d, "analyst"), _text(d, "note", False), ts
    )


def alert_hash(alert_id: str) -> int:
    return zlib.crc32(alert_id.encode())


def remember_alerts(table: Any, slots: list[int], alert_ids: list[str]) -> None:
    """Note each alert in its stream's ring of recent alert ids."""
    for slot, aid in zip(slots, alert_ids, strict=True):
        k = int(table.alerts_raised[slot])
        table.alert_ids[slot, k % ALERT_MEMORY] = alert_hash(aid)
        table.alerts_raised[slot] = k + 1
        table.dirty[slot] = True


def apply_verdict(table: Any, v: Verdict, offset: int, quiet_seconds: float) -> str | None:
    """Apply one verdict read at `offset` of the verdicts topic to its stream's state. Returns None
    when applied, "already_applied" for a verdict the restored state holds (a replay after a
    restart), or the dead-letter reason: unknown_stream, unknown_alert."""
    slot = table.index.get(v.stream_id)
    if slot is None:
        return "unknown_stream"
    if offset <= table.verdict_offset[slot]:
        return "already_applied"
    if alert_hash(v.alert_id) not in table.alert_ids[slot, : min(int(table.alerts_raised[slot]), ALERT_MEMORY)]:
        return "unknown_alert"
    table.verdict_offset[slot] = offset
    if v.verdict == "legit":
        table.evidence[slot] = 0.0
        table.quiet_until[slot] = max(float(table.quiet_until[slot]), v.decided_at + quiet_seconds)
    elif v.verdict == "fraud":
        table.confirmed[slot] = True
        table.quiet_until[slot] = 0.0  # a later fraud verdict ends a quiet spell
    table.dirty[slot] = True
    return None
