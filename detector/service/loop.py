"""The daemon: wiring, and the flat poll -> intake -> score -> emit -> checkpoint loop.

    app = Detector(settings)                  # loads the model; nothing connects yet
    stats = app.run(max_events=10_000, timeout=60)   # tests drive the real loop this way
    app.stop()                                # from a signal handler or another thread

Delivery is at-least-once: offsets are committed only after the alerts, dead letters and the
state they depend on are acknowledged (the order is `Checkpointer.commit`'s). A failure raises
out of the loop without committing, so a restarted instance re-scores the uncommitted tail from
the matching state. A stop gets one deadline (`runtime.shutdown_timeout_seconds`) for the last
checkpoint and the client closes together.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from detector.config import Settings
from detector.core import record
from detector.core.features import FeatureSpec
from detector.exceptions import KafkaUnavailable
from detector.kafka.base import DeliveryFailed, Partition, Record
from detector.kafka.factory import client_for
from detector.offline.model import Artifact, load_artifact
from detector.runtime import freeze_heap
from detector.service.checkpointing import SHADOW, Checkpointer, Held
from detector.service.deadline import Deadline
from detector.service.feedback import Feedback
from detector.service.health import HealthServer, HealthState
from detector.service.intake import Intake, intake
from detector.service.metrics import BatchAccounting, Metrics, RunStats
from detector.service.reload import ModelWatch
from detector.service.session import Backoff, Session
from detector.service.shadow import Served, shadow

log = logging.getLogger("detector")
# Failures that end a session but not the process (after the first assignment): Kafka down or
# refusing a write or a commit. Config and model errors are not among them.
TRANSIENT: tuple[type[Exception], ...] = (DeliveryFailed, KafkaUnavailable)


class Detector:
    def __init__(
        self,
        settings: Settings,
        artifact: Artifact | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        s = self.settings = settings
        self.clock = clock
        self.spec = FeatureSpec.from_config(settings.features)
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics.create(self.registry)
        self.stats = RunStats()
        self.accounting = BatchAccounting(self.metrics, self.stats)
        self.health = HealthState(readiness=self.readiness)
        self.metrics.ready.set_function(lambda: 1.0 if self.readiness()[0] else 0.0)
        self.http_port: int | None = None
        self.client = client_for(s.kafka)
        self.checkpoints = Checkpointer(s.kafka.state_topic, self.metrics, s.kafka.delivery == "exactly_once")
        self.watch = ModelWatch(s.model.path, s.model.watch_seconds, self.spec, self.metrics)
        self.shadow_watch = None if s.model.shadow_path is None else ModelWatch(
            s.model.shadow_path, s.model.watch_seconds, self.spec, self.metrics
        )  # fmt: skip
        self.challenger: Served | None = None
        self.feedback = Feedback(self.metrics, s.feedback)
        self.session: Session | None = None
        self.down: str | None = "starting"  # why not serving, outside the parts' own states
        self._stop = threading.Event()
        self._deadline: Deadline | None = None  # the shutdown's, from the stop request on
        self._source_tag = record.source_tag(s.kafka.input_topic)
        self._install(artifact or load_artifact(s.model.path, self.spec))
        if s.model.shadow_path is not None:
            rival = load_artifact(s.model.shadow_path, self.spec)
            if rival.version != self.artifact.version:
                self._challenge(rival)

    def _install(self, art: Artifact, promoted: Served | None = None) -> None:
        """Serve `art`: on a fresh stream table, or on the challenger's (`promoted`, its version)."""
        s = self.settings
        served = promoted or Served.load(art, s, self.spec)
        self.champion = served
        self.artifact, self.scorer, self.table, self.policy = (
            served.artifact,
            served.scorer,
            served.table,
            served.policy,
        )
        self.accounting.reset()
        self.accounting.serve("champion", art.version, served.drift)
        self.metrics.threshold.set(art.threshold.value)
        self.metrics.effective_threshold.set(art.threshold.value)
        self.metrics.model_info.info({"version": art.version, "threshold_method": art.threshold.method})
        if self.challenger is not None and self.challenger.version == art.version and promoted is None:
            self._challenge(None)  # the challenger's version now serves cold: nothing left to compare

    def _challenge(self, art: Artifact | None, replace: bool = True) -> None:
        """Score `art` in shadow from now on, cold (None: no challenger); `replace`: the previous
        challenger's state is deleted from the changelog (not after a failure: it is restored)."""
        old = self.challenger
        if old is not None and replace:
            self.checkpoints.drop(old.held(SHADOW))
        self.challenger = None if art is None else Served.load(art, self.settings, self.spec)
        self.accounting.serve("challenger", None if art is None else art.version,
                              None if self.challenger is None else self.challenger.drift)  # fmt: skip
        if art is not None:
            log.info("scoring challenger %s in shadow (threshold %.4f): alerts to %s", art.version,
                     art.threshold.value, self.settings.kafka.shadow_alerts_topic)  # fmt: skip

    def held(self) -> list[Held]:
        """Every model's state the changelog holds: the champion's first."""
        c = self.challenger
        return [self.champion.held()] + ([] if c is None else [c.held(SHADOW)])

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget the streams of revoked partitions, in every model; the champion's count."""
        if self.challenger is not None:
            self.challenger.table.drop_partitions(partitions)
        return self.table.drop_partitions(partitions)

    def stop(self) -> None:
        """Stop after the current batch; the shutdown budget starts now."""
        if self._deadline is None:
            self._deadline = Deadline(self.settings.runtime.shutdown_timeout_seconds)
        self._stop.set()

    def request_reload(self) -> None:
        """Reload the models between two batches (SIGHUP, or a new version in a model folder)."""
        self.watch.request()
        if self.shadow_watch is not None:
            self.shadow_watch.request()

    def readiness(self) -> tuple[bool, str]:
        """Ready to score, and why not: computed from the state of the parts whenever asked."""
        if self.down is not None:
            return False, self.down
        return (False, "not connected") if self.session is None else self.session.readiness()

    def ready(self) -> bool:
        return self.readiness()[0]

    def checkpoint(self, reason: str, blocking: bool = True) -> None:
        """Make everything up to the last processed event durable (`Checkpointer.commit`)."""
        assert self.session is not None
        deadline = self._deadline if reason == "shutdown" else None
        done = self.checkpoints.commit(reason, self.session.io(), self.held(), self._source_tag, deadline, blocking)
        self.stats.committed_now(done)

    def shutdown_deadline(self) -> Deadline | None:
        return self._deadline

    @property
    def assigned(self) -> frozenset[Partition]:
        """The input partitions this instance holds (their verdicts' partitions come with them)."""
        held = frozenset() if self.session is None else self.session.assigned
        return frozenset(tp for tp in held if tp[0] == self.settings.kafka.input_topic)

    def restore(self, partitions: list[int]) -> int:
        return self.checkpoints.restore(self.client, self.held(), partitions, self._source_tag, self.clock())

    # -- the loop ------------------------------------------------------------------------------
    def run(self, max_events: int | None = None, timeout: float | None = None) -> RunStats:
        """Run until stop(), `max_events` consumed, or `timeout` seconds; returns what was done.

        A Kafka failure after the first assignment (broker down, a topic unwritable, a commit
        refused) does not end the process: the session is closed without committing, and a new
        one resumes from the last checkpoint (committed offsets, saved state) after a backoff of
        1, 2, 4 ... 30 s. Nothing is lost; events since the checkpoint are scored again. At
        startup the same failures are fatal, so a wrong address or password fails fast.
        """
        s, a = self.settings, self.artifact
        until = None if timeout is None else time.monotonic() + timeout
        log.info(
            "starting: model %s, threshold %.4f, input %s, group %s, client %s",
            *(a.version, a.threshold.value, s.kafka.input_topic, s.kafka.group_id, s.kafka.client),
        )
        freeze_heap()
        h = s.http
        with HealthServer(self.registry, self.health, h.host, h.port, h.auth(), h.tls()) as server:
            self.http_port = server.port
            log.info("metrics and health on %s://%s:%d", "https" if h.tls() else "http", h.host, server.port)
            backoff, was_ready = Backoff(), False
            while True:
                backoff.started()
                try:
                    self._session(max_events, until)
                    break
                except TRANSIENT as exc:
                    was_ready = was_ready or (self.session is not None and self.session.ever_assigned)
                    if not was_ready:
                        raise
                    wait = backoff.failed()
                    self.metrics.session_restarts.inc()
                    self.down = f"Kafka failure, resuming from the last checkpoint: {exc}"
                    log.error(
                        "Kafka failure (%s); nothing committed since the last checkpoint; resuming from it in %.0fs",
                        *(exc, wait),
                    )
                    # Drop state not yet saved: the changelog has the truth.
                    self._install(self.artifact)
                    if self.challenger is not None:
                        self._challenge(self.challenger.artifact, replace=False)
                    self.checkpoints.reset()
                    if self._stop.wait(wait) or (until is not None and time.monotonic() >= until):
                        break
            st = self.stats
            log.info(
                "stopping after %d events (%d alerts), %.0f events/s from the first batch to the last commit",
                *(st.events, st.alerts, st.rate()),
            )
        self.down = "stopped"
        return self.stats

    def _session(self, max_events: int | None, until: float | None) -> None:
        """One connection to Kafka: open the session's clients, loop, checkpoint, close."""
        shadow = self.settings.model.shadow_path is not None
        with Session(self, self.client, self.settings.kafka, shadow) as self.session:
            self.down = None
            while not self._stop.is_set():
                records = self.session.poll()
                self.health.beat()
                self.accounting.tick(self.session.source)
                if records:
                    self._process(records)
                done = self.checkpoints.step(
                    self.session.io(), self.held(), self._source_tag,
                    self.settings.state.checkpoint_interval_seconds, self.clock(),
                )  # fmt: skip
                self.stats.committed_now(done or {})
                self._maybe_reload()
                if max_events is not None and self.stats.events >= max_events:
                    break
                if until is not None and time.monotonic() >= until:
                    break
            self.checkpoint("shutdown")

    def _process(self, records: list[Record]) -> None:
        """One batch: intake, score, publish alerts and dead letters; offsets wait for a checkpoint."""
        assert self.session is not None
        t0 = time.perf_counter()
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.monotonic()
        now, table = self.clock(), self.table
        tables = [m.table for m in (self.champion, self.challenger) if m is not None]
        batch = intake(records, self.spec, self.settings.runtime, tables, now, self.settings.kafka.verdicts_topic)
        self.stats.already_applied += batch.already_applied
        refused = batch.bad_verdicts + self.feedback.apply(table, batch.verdicts)  # verdicts before the events
        events, parts, offsets = batch.events, batch.partitions, batch.offsets
        if self.challenger is not None and batch.applied[0].any():  # the challenger is behind on some
            fresh = np.flatnonzero(~batch.applied[0])
            events, parts, offsets = [events[i] for i in fresh], parts[fresh], offsets[fresh]
        scores = self.scorer.score_many(events, now, parts)
        np.maximum.at(table.offset, scores.slots, offsets)  # each stream's applied offset
        s, source = scores.slots, (parts, offsets)
        alerts = self.policy.alerts_for(events, scores, now, table.quiet_until[s], table.confirmed[s], source)
        self.feedback.raised(table, alerts)
        self.metrics.effective_threshold.set(self.policy.effective_threshold)
        self.session.publish(alerts, batch.dead + refused)
        if self.challenger is not None:
            self._shadow(batch, now, alerts)
        self.checkpoints.track(records)
        self.accounting.batch(
            len(records) - batch.verdict_records,
            *(events, len(batch.dead), scores, alerts, self.policy.suppressed_total),
            *(self.table, now, time.perf_counter() - t0),
        )

    def _shadow(self, batch: Intake, now: float, alerts: list[dict[str, Any]]) -> None:
        """The challenger's turn on the batch: its would-be alerts to the shadow topic, its metrics."""
        assert self.session is not None and self.challenger is not None
        c = self.challenger
        seen = shadow(c, batch.events, batch.partitions, batch.offsets, batch.applied[1], now, alerts)
        self.session.publish_shadow(seen.alerts)
        self.accounting.model("challenger", seen.scores, len(seen.alerts), now)
        m = self.metrics.shadow_agreement
        for kind, n in seen.agreement.items():
            if n:
                m.labels(champion=self.artifact.version, challenger=c.version, kind=kind).inc(n)

    def _maybe_reload(self) -> None:
        if self.shadow_watch is not None:  # a new challenger (the one in shadow, or the champion's version: none)
            rival = self.shadow_watch.poll((self.challenger or self.champion).version)
        else:
            rival = None
        if rival is not None and rival.version != self.artifact.version:
            self.checkpoint("reload")  # the old challenger's state is consistent before it goes
            self._challenge(rival)
        art = self.watch.poll(self.artifact.version)
        if art is None:
            return
        self.checkpoint("reload")  # offsets and state of the old model are consistent and durable
        old, c = self.champion, self.challenger
        if c is not None and c.version == art.version:
            self._promote(c)
        else:
            self._install(art)
            log.info(
                "model reloaded: %s -> %s (threshold %.4f); streams restart cold",
                *(old.version, art.version, art.threshold.value),
            )
        self.metrics.model_reloads.labels(result="ok").inc()
        freeze_heap()

    def _promote(self, rival: Served) -> None:
        """The challenger becomes the champion with its per-stream state; the old champion's state
        is dropped. A checkpoint writes the promoted streams under their plain ids at once, then
        deletes their SHADOW keys and the old champion's other streams (checkpointing's `drop`)."""
        old = self.champion
        self.challenger = None
        self.accounting.serve("challenger", None)
        self._install(rival.artifact, promoted=rival)
        t = rival.table
        t.dirty[list(t.index.values())] = True
        self.checkpoints.drop(rival.held(SHADOW))
        self.checkpoints.drop(old.held(), keep=rival.held())
        self.checkpoint("promote")
        log.info(
            "challenger promoted: %s -> %s (threshold %.4f) with the state of its %d streams: none restarts cold",
            *(old.version, rival.version, rival.artifact.threshold.value, len(t)),
        )
