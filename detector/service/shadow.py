"""Models the daemon serves: the champion, and a challenger scored in shadow (`model.shadow_path`).

    champ = Served.load(artifact, settings, spec)      # scorer, stream table, alert policy, drift
    alerts = champ.alerts_for(events, scores, now, ...)
    rival = Served.load(challenger, settings, spec)
    shadow_alerts, agreement = shadow(rival, batch, now, champion_alerts)

A challenger scores every event the champion scores, on its own per-stream state (checkpointed
beside the champion's, `detector.service.checkpointing.SHADOW`). Its would-be alerts go to
`kafka.shadow_alerts_topic` with the alerts' schema (their `model_version` and `alert_id` name
it); verdicts and cooldown feedback apply to the champion only. Promotion hands its table over
as is: the first event of each stream after it scores as the challenger would have scored it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.config import Settings
from detector.core.alerts import AlertPolicy
from detector.core.drift import Drift
from detector.core.explain import Explainer
from detector.core.features import FeatureSpec, ParsedEvent
from detector.core.scoring import BatchScores, StreamingScorer
from detector.core.state import StreamTable
from detector.offline.model import Artifact
from detector.offline.scorers import artifact_scorer
from detector.service.checkpointing import SHADOW, Held

AGREEMENT = ("both", "champion_only", "challenger_only")


@dataclass
class Served:
    """One model as the daemon serves it."""

    artifact: Artifact
    scorer: StreamingScorer
    policy: AlertPolicy
    drift: Drift | None

    @classmethod
    def load(cls, art: Artifact, settings: Settings, spec: FeatureSpec) -> Served:
        """`art` on a fresh stream table (hidden state is meaningless across weights)."""
        s = settings
        scorer = artifact_scorer(art, spec, s.model.warmup_events, s.state.max_streams, s.state.idle_ttl_seconds)
        policy = AlertPolicy.for_model(art.threshold, art.version, Explainer(scorer.spec, art.bucket_labels), s.alerts)
        ref = art.drift_reference
        return cls(art, scorer, policy, None if ref is None else Drift(ref, scorer.spec.names))

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def table(self) -> StreamTable:
        return self.scorer.table

    def held(self, prefix: bytes = b"") -> Held:
        return Held(self.table, self.version, prefix)


@dataclass
class Shadowed:
    """A batch as the challenger saw it."""

    scores: BatchScores
    alerts: list[dict[str, Any]]
    agreement: dict[str, int]


def shadow(
    rival: Served,
    events: list[ParsedEvent],
    partitions: np.ndarray,
    offsets: np.ndarray,
    applied: np.ndarray,
    now: float,
    champion_alerts: list[dict[str, Any]],
) -> Shadowed:
    """Score the events `rival` has not applied yet on its own state; its would-be alerts (no
    feedback: no stream is quiet or confirmed for it), and how they agree with the champion's,
    event by event (`source_partition`, `source_offset`)."""
    keep = ~applied
    if not keep.all():
        idx = np.flatnonzero(keep)
        events, partitions, offsets = [events[i] for i in idx], partitions[idx], offsets[idx]
    scores = rival.scorer.score_many(events, now, partitions)
    table = rival.table
    np.maximum.at(table.offset, scores.slots, offsets)
    n = len(events)
    alerts = rival.policy.alerts_for(events, scores, now, np.zeros(n), np.zeros(n, bool), (partitions, offsets))
    return Shadowed(scores, alerts, agreement(champion_alerts, alerts))


def agreement(champion: list[dict[str, Any]], challenger: list[dict[str, Any]]) -> dict[str, int]:
    """Alerts in common (the same input event), and those only one model raised."""

    def where(alerts: list[dict[str, Any]]) -> set[tuple[int, int]]:
        return {(a["source_partition"], a["source_offset"]) for a in alerts}

    a, b = where(champion), where(challenger)
    return {"both": len(a & b), "champion_only": len(a - b), "challenger_only": len(b - a)}


__all__ = ["AGREEMENT", "SHADOW", "Served", "Shadowed", "agreement", "shadow"]
