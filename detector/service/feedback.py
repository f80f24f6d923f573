"""The daemon's side of analysts' verdicts: apply them to the streams, count them, and keep the
live precision figure.

    fb = Feedback(metrics, settings.feedback)
    dead = fb.apply(table, batch.verdicts)      # before the batch's events are scored
    fb.raised(table, alerts)                    # after: each stream remembers its alerts

What a verdict does to a stream is detector.core.feedback's (durable, checkpointed); what is kept
here only serves the metrics and is not: the severity and detection time of the last
RECENT_ALERTS alerts, and the last `precision_window` verdicts.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from detector.config import FeedbackConfig
from detector.core.features import parse_timestamp
from detector.core.feedback import Verdict, apply_verdict, remember_alerts
from detector.core.state import StreamTable
from detector.exceptions import InvalidEvent
from detector.kafka.base import Record
from detector.service.metrics import Metrics

# Alerts whose severity and detection time are kept for the verdict metrics (~100 bytes each).
RECENT_ALERTS = 100_000


class Feedback:
    def __init__(self, metrics: Metrics, cfg: FeedbackConfig) -> None:
        self.m, self.cfg = metrics, cfg
        self._recent: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._window: deque[bool] = deque(maxlen=cfg.precision_window)  # True: fraud, False: legit
        metrics.alert_precision.set(float("nan"))

    def apply(self, table: StreamTable, verdicts: list[tuple[Record, Verdict]]) -> list[tuple[Record, InvalidEvent]]:
        """Apply each verdict to its stream; returns the refused ones, with their reasons."""
        dead: list[tuple[Record, InvalidEvent]] = []
        for r, v in verdicts:
            why = apply_verdict(table, v, r.offset, self.cfg.legit_quiet_seconds)
            if why == "already_applied":
                continue
            if why is not None:
                detail = f"verdict on alert {v.alert_id!r} of stream {v.stream_id!r}: {why.replace('_', ' ')} here"
                dead.append((r, InvalidEvent(why, detail)))
                continue
            severity, detected = self._recent.get(v.alert_id, ("unknown", None))
            self.m.verdicts.labels(verdict=v.verdict, severity=severity).inc()
            if detected is not None:
                self.m.verdict_delay.observe(max(v.decided_at - detected, 0.0))
            if v.verdict != "unsure":
                self._window.append(v.verdict == "fraud")
                self.m.alert_precision.set(sum(self._window) / len(self._window))
        return dead

    def raised(self, table: StreamTable, alerts: list[dict[str, Any]]) -> None:
        if not alerts:
            return
        slots = [table.index[a["stream_id"]] for a in alerts]
        remember_alerts(table, slots, [a["alert_id"] for a in alerts])
        for a in alerts:
            self._recent[a["alert_id"]] = (a["severity"], parse_timestamp(a["detected_at"]))
            self._recent.move_to_end(a["alert_id"])
        while len(self._recent) > RECENT_ALERTS:
            self._recent.popitem(last=False)
