"""Alerts from scores: threshold, severity, explanation, per-stream cooldown. Pure.

    policy = AlertPolicy.for_model(threshold, "abc", Explainer(spec), settings.alerts)
    policy = AlertPolicy(threshold, version="abc", explainer=Explainer(spec), cooldown_seconds=60,
                         passthrough=("amount",))     # the same, field by field
    alerts = policy.alerts_for(events, scores, detected_at=time.time())

Cooldown is measured in event time, so a replay gives the same alerts as live traffic. Alerts
held back during a stream's cooldown are counted and the count rides on its next alert.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from detector.config import AlertsConfig
from detector.core.budget import AlertBudget, budget_for
from detector.core.evidence import DRIVER_OF_PART
from detector.core.explain import Explainer
from detector.core.features import ParsedEvent
from detector.core.scorer import is_alert
from detector.core.scoring import BatchScores
from detector.core.threshold import Threshold

# Cooldown bookkeeping is bounded like the stream table: an id flood cannot grow it without end.
_MAX_COOLDOWN_ENTRIES = 100_000


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class AlertPolicy:
    threshold: Threshold
    version: str
    explainer: Explainer
    cooldown_seconds: float = 0.0
    passthrough: tuple[str, ...] = ()
    # An alert budget raises the threshold on traffic that would alert too often (detector.core.budget).
    budget: AlertBudget | None = None
    suppressed_total: int = 0
    _last: OrderedDict[str, tuple[float, int]] = field(default_factory=OrderedDict)

    @classmethod
    def for_model(cls, threshold: Threshold, version: str, explainer: Explainer, cfg: AlertsConfig) -> AlertPolicy:
        """The policy of the `alerts` config section for a model of this threshold and version."""
        return cls(
            threshold,
            version,
            explainer,
            cfg.cooldown_seconds,
            cfg.passthrough_fields,
            budget_for(threshold.value, cfg.budget_per_10k),
        )

    @property
    def effective_threshold(self) -> float:
        return self.threshold.value if self.budget is None else self.budget.effective

    def limits(self, scores: BatchScores) -> np.ndarray:
        """The threshold applied to each event: the calibrated one, or the budget's."""
        if self.budget is None:
            return np.full(len(scores.score), self.threshold.value)
        return self.budget.thresholds(scores.score, scores.warming)

    def alerts_for(
        self,
        events: list[ParsedEvent],
        scores: BatchScores,
        detected_at: float,
        quiet_until: np.ndarray | None = None,
        confirmed: np.ndarray | None = None,
        source: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> list[dict[str, Any]]:
        """The alerts of a scored batch. `quiet_until` and `confirmed` are each event's stream's
        verdict state (detector.core.feedback): a quiet stream's alert goes out only at the
        critical level (the others count as suppressed); a confirmed one's carries
        `confirmed_stream: true`. `source` (input partitions, offsets) goes into each alert, so a
        console can read the stream's events that led to it."""
        limits = self.limits(scores)
        hits = np.flatnonzero(is_alert(scores.score, scores.warming, limits))
        if quiet_until is not None and len(hits):
            ts = np.array([events[i].ts for i in hits.tolist()])
            quiet = (ts < quiet_until[hits]) & (scores.score[hits] < self.threshold.critical)
            self.suppressed_total += int(quiet.sum())
            hits = hits[~quiet]
        if len(hits) == 0:
            return []
        out = []
        detected = iso(detected_at)
        explained = self.explainer.top(scores, hits, events, 3)
        for i, top in zip(hits.tolist(), explained, strict=True):
            ev = events[i]
            held = 0
            if self.cooldown_seconds > 0:
                last = self._last.get(ev.stream_id)
                if last is not None and ev.ts - last[0] < self.cooldown_seconds:
                    self._last[ev.stream_id] = (last[0], last[1] + 1)
                    self.suppressed_total += 1
                    continue
                held = last[1] if last else 0
                self._last[ev.stream_id] = (ev.ts, 0)
                self._last.move_to_end(ev.stream_id)
                if len(self._last) > _MAX_COOLDOWN_ENTRIES:
                    self._last.popitem(last=False)
            score = float(scores.score[i])
            alert = {
                "alert_id": f"{self.version}:{ev.event_id}",
                "event_id": ev.event_id,
                "stream_id": ev.stream_id,
                "event_ts": iso(ev.ts),
                "detected_at": detected,
                "score": round(score, 6),
                "threshold": round(float(limits[i]), 6),
                "severity": self.threshold.severity(score),
                "model_version": self.version,
                "suppressed_since_last": held,
                "top_features": top,
                "event": {k: ev.record.get(k) for k in self.passthrough if k in ev.record},
            }
            if scores.driver is not None:
                alert["driven_by"] = DRIVER_OF_PART[int(scores.driver[i])]
            if confirmed is not None and confirmed[i]:
                alert["confirmed_stream"] = True
            if source is not None:
                alert["source_partition"], alert["source_offset"] = int(source[0][i]), int(source[1][i])
            out.append(alert)
        return out
