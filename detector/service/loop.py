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

import numpy as np
from prometheus_client import CollectorRegistry

from detector.config import Settings
from detector.core import record
from detector.core.alerts import AlertPolicy
from detector.core.drift import Drift
from detector.core.explain import Explainer
from detector.core.features import FeatureSpec
from detector.exceptions import KafkaUnavailable
from detector.kafka.base import DeliveryFailed, Partition, Record
from detector.kafka.factory import client_for
from detector.offline.model import Artifact, load_artifact
from detector.offline.scorers import artifact_scorer
from detector.runtime import freeze_heap
from detector.service.checkpointing import Checkpointer
from detector.service.deadline import Deadline
from detector.service.feedback import Feedback
from detector.service.health import HealthServer, HealthState
from detector.service.intake import intake
from detector.service.metrics import BatchAccounting, Metrics, RunStats
from detector.service.reload import ModelWatch
from detector.service.session import Backoff, Session

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
        self.checkpoints = Checkpointer(s.kafka.state_topic, self.metrics)
        self.watch = ModelWatch(s.model.path, s.model.watch_seconds, self.spec, self.metrics)
        self.feedback = Feedback(self.metrics, s.feedback)
        self.session: Session | None = None
        self.down: str | None = "starting"  # why not serving, outside the parts' own states
        self._stop = threading.Event()
        self._deadline: Deadline | None = None  # the shutdown's, from the stop request on
        self._source_tag = record.source_tag(s.kafka.input_topic)
        self._install(artifact or load_artifact(s.model.path, self.spec))

    def _install(self, art: Artifact) -> None:
        """Serve `art` on a fresh stream table (hidden state is meaningless across weights)."""
        s = self.settings
        self.artifact = art
        self.scorer = artifact_scorer(
            art, self.spec, s.model.warmup_events, s.state.max_streams, s.state.idle_ttl_seconds
        )
        self.table = self.scorer.table
        self.policy = AlertPolicy.for_model(
            art.threshold, art.version, Explainer(self.scorer.spec, art.bucket_labels), s.alerts
        )
        self.accounting.reset()
        ref = art.drift_reference
        self.accounting.watch_drift(None if ref is None else Drift(ref, self.scorer.spec.names), art.version)
        self.metrics.threshold.set(art.threshold.value)
        self.metrics.effective_threshold.set(art.threshold.value)
        self.metrics.model_info.info({"version": art.version, "threshold_method": art.threshold.method})

    def stop(self) -> None:
        """Stop after the current batch; the shutdown budget starts now."""
        if self._deadline is None:
            self._deadline = Deadline(self.settings.runtime.shutdown_timeout_seconds)
        self._stop.set()

    def request_reload(self) -> None:
        """Reload the model between two batches (SIGHUP, or a new version in the model folder)."""
        self.watch.request()

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
        done = self.checkpoints.commit(
            reason, self.session.io(), self.table, self.artifact.version, self._source_tag, deadline, blocking
        )
        self.stats.committed_now(done)

    def shutdown_deadline(self) -> Deadline | None:
        return self._deadline

    @property
    def assigned(self) -> frozenset[Partition]:
        """The input partitions this instance holds (their verdicts' partitions come with them)."""
        held = frozenset() if self.session is None else self.session.assigned
        return frozenset(tp for tp in held if tp[0] == self.settings.kafka.input_topic)

    def restore(self, partitions: list[int]) -> int:
        return self.checkpoints.restore(
            self.client, self.table, partitions, self.artifact.version, self._source_tag, self.clock()
        )

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
                    self._install(self.artifact)  # drop state not yet saved: the changelog has the truth
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
        with Session(self, self.client, self.settings.kafka) as self.session:
            self.down = None
            while not self._stop.is_set():
                records = self.session.poll()
                self.health.beat()
                self.accounting.tick(self.session.source)
                if records:
                    self._process(records)
                done = self.checkpoints.step(
                    self.session.io(), self.table, self.artifact.version, self._source_tag,
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
        batch = intake(records, self.spec, self.settings.runtime, table, now, self.settings.kafka.verdicts_topic)
        self.stats.already_applied += batch.already_applied
        refused = batch.bad_verdicts + self.feedback.apply(table, batch.verdicts)  # verdicts before the events
        scores = self.scorer.score_many(batch.events, now, batch.partitions)
        np.maximum.at(table.offset, scores.slots, batch.offsets)  # each stream's applied offset
        s, source = scores.slots, (batch.partitions, batch.offsets)
        alerts = self.policy.alerts_for(batch.events, scores, now, table.quiet_until[s], table.confirmed[s], source)
        self.feedback.raised(table, alerts)
        self.metrics.effective_threshold.set(self.policy.effective_threshold)
        self.session.publish(alerts, batch.dead + refused)
        self.checkpoints.track(records)
        self.accounting.batch(
            len(records) - batch.verdict_records,
            *(batch.events, len(batch.dead), scores, alerts, self.policy.suppressed_total),
            *(self.table, now, time.perf_counter() - t0),
        )

    def _maybe_reload(self) -> None:
        art = self.watch.poll(self.artifact.version)
        if art is None:
            return
        self.checkpoint("reload")  # offsets and state of the old model are consistent and durable
        old = self.artifact.version
        self._install(art)
        self.metrics.model_reloads.labels(result="ok").inc()
        freeze_heap()
        log.info(
            "model reloaded: %s -> %s (threshold %.4f); streams restart cold", old, art.version, art.threshold.value
        )
