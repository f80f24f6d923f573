"""The daemon: composition root and the flat consume -> score -> emit -> commit loop.

    app = Detector(settings)                  # loads the model; nothing connects yet
    stats = app.run(max_events=10_000, timeout=60)   # tests drive the real loop this way
    app.stop()                                # from a signal handler or another thread

One iteration: poll a batch -> decode and validate (bad events to the dead-letter topic) ->
score the batch -> publish alerts -> checkpoint when due. See `detector.checkpointing` for the
order that makes delivery at-least-once: offsets are committed only after the alerts, dead letters and the
state they depend on are acknowledged by Kafka. A failure raises out of the loop without
committing, so a restarted instance re-scores the uncommitted tail from the matching state.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from detector import checkpoint as ckpt
from detector.alerts import AlertPolicy
from detector.backend import Sink, Source, make_sink, make_source
from detector.budget import budget_for
from detector.changelog import read_partition
from detector.checkpointing import Checkpointer, Io
from detector.config import Settings
from detector.exceptions import DetectorError, InvalidEvent, KafkaUnavailable
from detector.explain import Explainer
from detector.features import FeatureSpec, ParsedEvent, dumps
from detector.health import HealthServer, HealthState
from detector.kafka_client import ensure_topics, partition_count
from detector.logs import RateLimited
from detector.metrics import Metrics, TopStreams, observe_many
from detector.model import Artifact, load_artifact
from detector.outbox import Outbox
from detector.scoring import BatchScores, StreamingScorer, table_for
from detector.sink import DeliveryFailed
from detector.source import Partition, Record

log = logging.getLogger("detector")
# Failures that end a session but not the process (after the first assignment): Kafka down or
# refusing a write or a commit. Config and model errors are not among them.
TRANSIENT: tuple[type[Exception], ...] = (DeliveryFailed, KafkaUnavailable)
MAX_BACKOFF_S = 30.0
# Consumer lag (a gauge for dashboards) is read from the client at most this often.
LAG_EVERY_S = 1.0


def _freeze_heap() -> None:
    """Move every object alive now (TensorFlow, Keras, the model: ~340k objects) out of the
    garbage collector's reach. A full collection over them takes ~155 ms on this 2-core machine:
    a pause every event in flight would wait out (the latency p99). Called once the model is in."""
    gc.collect()
    gc.freeze()


@dataclass
class RunStats:
    events: int = 0
    scored: int = 0
    warming: int = 0
    invalid: int = 0
    already_applied: int = 0
    alerts: int = 0
    batches: int = 0
    committed: dict[Partition, int] = field(default_factory=dict)
    first_batch_at: float | None = None  # time.monotonic() of the first non-empty batch
    last_commit_at: float | None = None

    def rate(self) -> float:
        """Events per second from the first batch to the last commit (0 before both)."""
        if self.first_batch_at is None or self.last_commit_at is None:
            return 0.0
        return self.events / max(self.last_commit_at - self.first_batch_at, 1e-9)


class Detector:
    def __init__(
        self,
        settings: Settings,
        artifact: Artifact | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.spec = FeatureSpec.from_config(settings.features)
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics.create(self.registry)
        self.top_streams = TopStreams(self.metrics.top_streams)
        self.health = HealthState()
        self.http_port: int | None = None
        self.stats = RunStats()
        # Input partitions this instance holds, kept by the rebalance callbacks (safe to read from
        # any thread, unlike the client's own assignment()).
        self.assigned: frozenset[Partition] = frozenset()
        self._stop = threading.Event()
        self._reported = {"suppressed": 0, "evictions": 0}  # running totals already added to counters
        self._checkpoints = Checkpointer(settings.kafka.state_topic, self.metrics, self.health, self._set_ready)
        self._callback_error: BaseException | None = None
        self._source_tag = ckpt.source_tag(settings.kafka.input_topic)
        self._was_ready = False  # assigned partitions at least once: later Kafka failures are retried
        self._failing = False
        self._lag_at = -LAG_EVERY_S
        # One line per 10 s at most for bad events: a flood of them must not flood the logs.
        self._dlq_log = RateLimited(log, every=10.0)
        self._sink: Sink | None = None  # alerts and dead letters
        self._state_sink: Sink | None = None  # the changelog only: see _session
        self._source: Source | None = None
        self._outbox: Outbox | None = None
        self._paused = False  # input paused: Kafka rejects alerts or dead letters for now
        self._reload_requested = threading.Event()
        self._model_mtime = self._metadata_mtime()
        self._last_model_check = time.monotonic()
        self._install(artifact or load_artifact(settings.model.path, self.spec))

    def _install(self, art: Artifact) -> None:
        """Serve `art`: a fresh stream table (hidden state is meaningless across weights)."""
        s = self.settings
        self.artifact = art
        spec = art.bind(self.spec)
        self.table = table_for(spec, s.state.max_streams, art.weights.state_size, art.window, s.state.idle_ttl_seconds)
        self.scorer = StreamingScorer(
            art.weights,
            art.norm,
            spec,
            self.table,
            art.window,
            s.model.warmup_events,
            art.prediction_weight,
            explain_above=art.threshold.value,
            error_weights=art.error_weights,
            evidence=art.evidence,
        )
        self.policy = AlertPolicy(
            art.threshold,
            art.version,
            Explainer(spec, art.bucket_labels),
            s.alerts.cooldown_seconds,
            s.alerts.passthrough_fields,
            budget_for(art.threshold.value, s.alerts.budget_per_10k),
        )
        self._reported["suppressed"] = self._reported["evictions"] = 0
        self.metrics.threshold.set(art.threshold.value)
        self.metrics.effective_threshold.set(art.threshold.value)
        self.metrics.model_info.info({"version": art.version, "threshold_method": art.threshold.method})

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        """Reload the model between two batches (SIGHUP, or a new version in the model folder)."""
        self._reload_requested.set()

    def _metadata_mtime(self) -> float:
        try:
            return (Path(self.settings.model.path) / "metadata.json").stat().st_mtime
        except OSError:
            return 0.0

    def _maybe_reload(self) -> None:
        watch = self.settings.model.watch_seconds
        if watch > 0 and time.monotonic() - self._last_model_check >= watch:
            self._last_model_check = time.monotonic()
            mtime = self._metadata_mtime()
            if mtime != self._model_mtime:
                self._model_mtime = mtime
                self._reload_requested.set()
        if not self._reload_requested.is_set():
            return
        self._reload_requested.clear()
        try:
            art = load_artifact(self.settings.model.path, self.spec)
        except DetectorError as exc:
            self.metrics.model_reloads.labels(result="refused").inc()
            log.error("model reload refused, still serving %s: %s", self.artifact.version, exc)
            return
        if art.version == self.artifact.version:
            return
        self.checkpoint("reload")  # offsets and state of the old model are consistent and durable
        old = self.artifact.version
        self._install(art)
        self.metrics.model_reloads.labels(result="ok").inc()
        _freeze_heap()
        log.info(
            "model reloaded: %s -> %s (threshold %.4f); streams restart cold", old, art.version, art.threshold.value
        )

    # -- rebalance callbacks (run inside poll, between batches) ------------------------------
    def _on_revoke(self, partitions: list[Partition]) -> None:
        if not partitions:
            return
        self.metrics.rebalances.inc()
        self._set_ready(False, "rebalancing")
        if self._failing:  # the session is closing after a failure: hand over without committing
            self.assigned = self.assigned - set(partitions)
            return
        try:
            # kafka-python runs this callback on its IO thread, where a blocking commit is not
            # allowed: the state is flushed here, the offsets committed asynchronously. Correctness
            # does not hinge on that commit: restored state carries each stream's applied offset.
            # (confluent runs callbacks on the loop's own thread and commits synchronously.)
            self.checkpoint("revoke", blocking=False)
        except BaseException as exc:  # noqa: BLE001 - kafka-python swallows callback errors; re-raised in run()
            self._callback_error = exc
            return
        self.assigned = self.assigned - set(partitions)
        dropped = self.table.drop_partitions({p for _, p in partitions})
        log.info(
            "partitions revoked: %s (checkpointed, %d streams handed over)", sorted(p for _, p in partitions), dropped
        )

    def _on_assign(self, partitions: list[Partition]) -> None:
        self.metrics.rebalances.inc()
        try:
            restored = self._restore(sorted(p for _, p in partitions))
        except BaseException as exc:  # noqa: BLE001 - see _on_revoke
            self._callback_error = exc
            return
        self.assigned = self.assigned | set(partitions)
        self._was_ready = self._was_ready or bool(partitions)
        if not self._paused:
            self._set_ready(bool(partitions), "ready" if partitions else "no partitions assigned")
        log.info("partitions assigned: %s (%d streams restored)", sorted(p for _, p in partitions), restored)

    def _set_ready(self, ready: bool, reason: str) -> None:
        self.health.ready, self.health.reason = ready, reason
        self.metrics.ready.set(1 if ready else 0)

    def _restore(self, partitions: list[int]) -> int:
        """Load the latest state of every stream of these partitions from the changelog."""
        t0 = time.monotonic()
        version, now, n, stale = self.artifact.version, self.clock(), 0, 0
        for p in partitions:
            for key, value in read_partition(self.settings.kafka, p):
                if value is None:
                    self.table.remove(key)
                    continue
                slot = self.table.slot_for_restore(key, p, now)
                if ckpt.decode_into(self.table, slot, value, version, self._source_tag):
                    n += 1
                else:
                    self.table.remove(key)  # another model's or input topic's state: this stream starts cold
                    stale += 1
        self.table.evicted.clear()  # evictions during a restore concern streams never written since
        if stale:
            log.warning("ignored %d changelog records written by another model version or input topic", stale)
        log.info("restored %d streams of partitions %s in %.2fs", n, partitions, time.monotonic() - t0)
        return n

    # -- checkpoint (detector.checkpointing holds the order) -----------------------------------
    def _io(self) -> Io:
        assert self._outbox is not None and self._state_sink is not None and self._source is not None
        return Io(self._outbox, self._state_sink, self._source)

    def checkpoint(self, reason: str, blocking: bool = True) -> None:
        """Make everything up to the last processed event durable (`Checkpointer.commit`)."""
        done = self._checkpoints.commit(
            reason, self._io(), self.table, self.artifact.version, self._source_tag, blocking
        )
        self._committed(done)

    def _step_checkpoint(self) -> None:
        """Start an interval checkpoint when due, or take the next step of the one in progress."""
        cp = self._checkpoints
        if cp.incremental is not None:
            done = cp.advance(self._io())
        elif cp.due(self.settings.state.checkpoint_interval_seconds):
            self.table.expire(self.clock())
            done = cp.begin(self._io(), self.table, self.artifact.version, self._source_tag)
        else:
            return
        if done is None:
            return
        self._committed(done)
        if not self.health.ready and self.assigned and not self._paused:
            log.info("checkpoint acknowledged: ready again")
            self._set_ready(True, "ready")

    def _committed(self, offsets: dict[Partition, int]) -> None:
        self.stats.committed.update(offsets)
        if offsets:
            self.stats.last_commit_at = time.monotonic()

    # -- the loop ------------------------------------------------------------------------------
    def run(self, max_events: int | None = None, timeout: float | None = None) -> RunStats:
        """Run until stop(), `max_events` consumed, or `timeout` seconds; returns what was done.

        A Kafka failure after the first assignment (broker down, a topic unwritable, a commit
        refused) does not end the process: the session is closed without committing, and a new
        one resumes from the last checkpoint (committed offsets, saved state) after a backoff of
        1, 2, 4 ... 30 s. Nothing is lost; events since the checkpoint are scored again. At
        startup the same failures are fatal, so a wrong address or password fails fast.
        """
        s = self.settings
        deadline = None if timeout is None else time.monotonic() + timeout
        log.info(
            "starting: model %s, threshold %.4f, input %s, group %s, client %s",
            self.artifact.version,
            self.artifact.threshold.value,
            s.kafka.input_topic,
            s.kafka.group_id,
            s.kafka.client,
        )
        _freeze_heap()
        with HealthServer(self.registry, self.health, s.http.host, s.http.port, s.http.auth(), s.http.tls()) as server:
            self.http_port = server.port
            scheme = "https" if s.http.tls() else "http"
            log.info("metrics and health on %s://%s:%d", scheme, s.http.host, server.port)
            failures = 0
            while True:
                started = time.monotonic()
                try:
                    self._session(max_events, deadline)
                    break
                except TRANSIENT as exc:
                    if not self._was_ready:
                        raise
                    # A session that ran a while was a recovery: the next failure starts the backoff over.
                    failures = 1 if time.monotonic() - started > 2 * MAX_BACKOFF_S else failures + 1
                    backoff = min(2.0 ** (failures - 1), MAX_BACKOFF_S)
                    self.metrics.session_restarts.inc()
                    self._set_ready(False, f"Kafka failure, resuming from the last checkpoint: {exc}")
                    log.error(
                        "Kafka failure (%s); nothing committed since the last checkpoint; resuming from it in %.0fs",
                        exc,
                        backoff,
                    )
                    self._install(self.artifact)  # drop state not yet saved: the changelog has the truth
                    self._checkpoints.reset()
                    self._callback_error = None
                    if self._stop.wait(backoff) or (deadline is not None and time.monotonic() >= deadline):
                        break
            log.info(
                "stopping after %d events (%d alerts), %.0f events/s from the first batch to the last commit",
                self.stats.events,
                self.stats.alerts,
                self.stats.rate(),
            )
        self._set_ready(False, "stopped")
        return self.stats

    def _session(self, max_events: int | None, deadline: float | None) -> None:
        """One connection to Kafka: open the sink and the source, loop, checkpoint, close."""
        s = self.settings
        with contextlib.ExitStack() as stack:
            self._prepare_topics()
            self._sink = make_sink(s.kafka).__enter__()
            stack.callback(self._close_sink)  # the sink in use then: re-sends may replace it
            # State goes through a producer (and broker connection) of its own. The broker serves
            # one connection's requests one at a time, so on a shared producer an alert raised
            # during a checkpoint waited for a state chunk's ~0.5 MB request to be written first.
            self._state_sink = stack.enter_context(make_sink(s.kafka))
            self._outbox = Outbox(self._sink)
            self._source = stack.enter_context(make_source(s.kafka, self._on_assign, self._on_revoke))
            self._failing, self._paused = False, False
            self.metrics.paused.set(0)
            try:
                while not self._stop.is_set():
                    records = self._source.poll()
                    if self._callback_error is not None:
                        raise self._callback_error
                    self._backpressure()
                    self.health.beat()
                    self.metrics.last_loop.set(time.time())
                    self.top_streams.tick(time.monotonic())
                    if records:
                        self._process(records)
                    self._step_checkpoint()
                    self._maybe_reload()
                    if max_events is not None and self.stats.events >= max_events:
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                self.checkpoint("shutdown")
            except BaseException:
                self._failing = True  # closing the consumer must not checkpoint unfinished work
                raise

    def _backpressure(self) -> None:
        """Pause the input while Kafka rejects alerts or dead letters; resume once all are acked."""
        assert self._outbox is not None and self._source is not None
        box, now = self._outbox, time.monotonic()
        if box.pump(now):
            # A producer that saw a fatal error (an idempotent one after a rejected batch) sends
            # nothing more: every re-send goes through a fresh one.
            self._close_sink()
            self._sink = box.sink = make_sink(self.settings.kafka).__enter__()
            before = box.retries
            box.resend(now)
            self.metrics.output_retries.inc(box.retries - before)
        if box.blocked:
            self._source.pause(True)  # every time: partitions assigned meanwhile start paused too
        if box.blocked == self._paused:
            return
        self._paused = box.blocked
        self.metrics.paused.set(1 if self._paused else 0)
        if self._paused:
            self._set_ready(False, f"input paused: {box.failure}")
            log.error("input paused, nothing committed past the rejected messages, retrying: %s", box.failure)
            return
        self._source.pause(False)
        log.info("every rejected message acknowledged after %d re-sends: input resumed", box.retries)
        if self.assigned and self._checkpoints.incremental is None:
            self._set_ready(True, "ready")

    def _close_sink(self) -> None:
        if self._sink is not None:
            self._sink.__exit__(None, None, None)

    def _prepare_topics(self) -> None:
        k = self.settings.kafka
        if k.create_topics:
            ensure_topics(k, [k.input_topic, k.alerts_topic, k.dead_letter_topic])
            ensure_topics(k, [k.state_topic], compacted=[k.state_topic], partitions=partition_count(k, k.input_topic))
        n_in, n_state = partition_count(k, k.input_topic), partition_count(k, k.state_topic)
        if n_state < n_in:
            raise DetectorError(
                f"state topic {k.state_topic} has {n_state} partitions, fewer than the "
                f"{n_in} of {k.input_topic}: it must have at least as many"
            )

    def _process(self, records: list[Record]) -> None:
        """One batch: validate, score, publish alerts; offsets wait for the next checkpoint."""
        assert self._outbox is not None and self._source is not None
        t0 = time.perf_counter()
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.monotonic()
        now = self.clock()
        events, parts, offs, invalid = self._decode(records, now)
        scores = self.scorer.score_batch(events, now, parts)
        np.maximum.at(self.table.offset, scores.slots, offs)
        alerts = self.policy.alerts_for(events, scores, now) if events else []
        self.metrics.effective_threshold.set(self.policy.effective_threshold)
        alerts_topic = self.settings.kafka.alerts_topic
        for a in alerts:
            self._outbox.send(alerts_topic, a["stream_id"].encode(), dumps(a))
        self._checkpoints.track(records)
        self._account(records, events, invalid, scores, alerts, now, time.perf_counter() - t0)

    def _decode(self, records: list[Record], now: float) -> tuple[list[ParsedEvent], np.ndarray, np.ndarray, int]:
        """Valid events (with partitions and offsets) and the count of dead-lettered ones.

        An event at or below its stream's applied offset was already scored and applied to the
        restored state by this group (before a rebalance or restart): it is skipped, not re-applied.
        """
        rt = self.settings.runtime
        spec, out, dlq = self.spec, self._outbox, self.settings.kafka.dead_letter_topic
        assert out is not None
        index, applied = self.table.index, self.table.offset
        events: list[ParsedEvent] = []
        parts: list[int] = []
        offs: list[int] = []
        invalid = 0
        for r in records:
            try:
                if r.value is None:
                    raise InvalidEvent("empty", "message has no value")
                ev = spec.parse(r.value, rt.max_event_bytes)
                if ev.ts > now + rt.max_future_seconds or ev.ts < now - rt.max_past_seconds:
                    raise InvalidEvent("clock_skew", f"timestamp {ev.ts:.0f} too far from now {now:.0f}")
                slot = index.get(ev.stream_id)
                if slot is not None and r.offset <= applied[slot]:
                    self.stats.already_applied += 1
                    continue
                events.append(ev)
                parts.append(r.partition)
                offs.append(r.offset)
            except InvalidEvent as exc:
                invalid += 1
                out.send(
                    dlq,
                    r.key,
                    r.value,
                    [
                        ("reason", exc.reason.encode()),
                        ("detail", exc.detail[:500].encode("utf-8", "replace")),
                        ("source_topic", r.topic.encode()),
                        ("source_partition", str(r.partition).encode()),
                        ("source_offset", str(r.offset).encode()),
                    ],
                )
                self.metrics.dead_letters.labels(reason=exc.reason).inc()
                self._dlq_log.warning("dead-lettered %d events since the last line; latest: %s", str(exc)[:200])
        return events, np.array(parts, dtype=np.int32), np.array(offs, dtype=np.int64), invalid

    def _account(
        self,
        records: list[Record],
        events: list[ParsedEvent],
        invalid: int,
        scores: BatchScores,
        alerts: list[dict[str, Any]],
        now: float,
        took: float,
    ) -> None:
        m, st = self.metrics, self.stats
        warming = int(scores.warming.sum())
        st.events += len(records)
        st.invalid += invalid
        st.warming += warming
        st.scored += len(events) - warming
        st.alerts += len(alerts)
        st.batches += 1
        m.events.labels(result="scored").inc(len(events) - warming)
        m.events.labels(result="warming").inc(warming)
        m.events.labels(result="invalid").inc(invalid)
        for a in alerts:
            m.alerts.labels(severity=a["severity"]).inc()
        m.alerts_suppressed.inc(self.policy.suppressed_total - self._reported["suppressed"])
        self._reported["suppressed"] = self.policy.suppressed_total
        observe_many(m.anomaly_score, scores.score[~scores.warming])
        ranked = np.where(scores.warming, -np.inf, scores.score)
        self.top_streams.update(ranked, lambda i: events[i].stream_id)
        observe_many(m.event_lag, np.maximum(now - np.array([e.ts for e in events]), 0.0))
        m.batch_duration.observe(took)
        m.active_streams.set(len(self.table))
        m.evictions.inc(self.table.evictions - self._reported["evictions"])
        self._reported["evictions"] = self.table.evictions
        assert self._source is not None
        mono = time.monotonic()
        if mono - self._lag_at >= LAG_EVERY_S:  # a client call per partition: not every small batch
            self._lag_at = mono
            for p, lag in self._source.lag().items():
                m.consumer_lag.labels(partition=str(p)).set(lag)
