"""The daemon: composition root and the flat consume -> score -> emit -> commit loop.

    app = Detector(settings)                  # loads the model; nothing connects yet
    stats = app.run(max_events=10_000, timeout=60)   # tests drive the real loop this way
    app.stop()                                # from a signal handler or another thread

One iteration: poll a batch -> decode and validate (bad events to the dead-letter topic) ->
score the batch -> publish alerts -> wait until every message of the batch is acknowledged ->
commit the batch's offsets. Offsets are committed only after their effects are acknowledged, so
a crash re-scores at most the uncommitted tail (at-least-once); a failed delivery stops the loop
without committing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from detector.alerts import AlertPolicy
from detector.config import Settings
from detector.exceptions import InvalidEvent
from detector.features import FeatureSpec, ParsedEvent, dumps
from detector.health import HealthServer, HealthState
from detector.kafka_client import ensure_topics
from detector.metrics import Metrics
from detector.model import Artifact, load_artifact
from detector.scoring import BatchScores, StreamingScorer
from detector.sink import KafkaSink
from detector.source import KafkaSource, Partition, Record
from detector.state import StreamTable

log = logging.getLogger("detector")
# 30 s for the broker to acknowledge a batch's alerts and dead letters: well above a healthy
# broker's milliseconds, below the consumer's max.poll.interval (5 min) so a rebalance is not forced.
FLUSH_TIMEOUT_S = 30.0


@dataclass
class RunStats:
    events: int = 0
    scored: int = 0
    warming: int = 0
    invalid: int = 0
    alerts: int = 0
    batches: int = 0
    committed: dict[Partition, int] = field(default_factory=dict)


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
        self.artifact = artifact or load_artifact(settings.model.path, self.spec)
        art, mc = self.artifact, settings.model
        self.table = StreamTable(
            settings.state.max_streams,
            art.weights.units,
            art.window,
            self.spec.n_features,
            settings.state.idle_ttl_seconds,
        )
        self.scorer = StreamingScorer(
            art.weights, art.norm, self.spec, self.table, art.window, mc.warmup_events, art.prediction_weight
        )
        self.policy = AlertPolicy(
            art.threshold,
            art.version,
            self.spec.names,
            settings.alerts.cooldown_seconds,
            settings.alerts.passthrough_fields,
        )
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics.create(self.registry)
        self.health = HealthState()
        self.http_port: int | None = None
        self.stats = RunStats()
        self._stop = threading.Event()
        self._reported = {"suppressed": 0, "evictions": 0}  # running totals already added to counters
        self._sink: KafkaSink | None = None
        self._source: KafkaSource | None = None
        self.metrics.threshold.set(art.threshold.value)
        self.metrics.model_info.info({"version": art.version, "threshold_method": art.threshold.method})

    def stop(self) -> None:
        self._stop.set()

    # -- rebalance callbacks (run inside poll) -------------------------------------------------
    def _on_assign(self, partitions: list[Partition]) -> None:
        self.metrics.rebalances.inc()
        self.health.ready = bool(partitions)
        self.health.reason = "ready" if partitions else "no partitions assigned"
        self.metrics.ready.set(1 if partitions else 0)
        log.info("partitions assigned: %s", sorted(p for _, p in partitions))

    def _on_revoke(self, partitions: list[Partition]) -> None:
        self.metrics.rebalances.inc()
        self.health.ready = False
        self.health.reason = "rebalancing"
        self.metrics.ready.set(0)
        log.info("partitions revoked: %s", sorted(p for _, p in partitions))

    # -- the loop ------------------------------------------------------------------------------
    def run(self, max_events: int | None = None, timeout: float | None = None) -> RunStats:
        """Run until stop(), `max_events` consumed, or `timeout` seconds; returns what was done."""
        s = self.settings
        deadline = None if timeout is None else time.monotonic() + timeout
        log.info(
            "starting: model %s, threshold %.4f, input %s, group %s",
            self.artifact.version,
            self.artifact.threshold.value,
            s.kafka.input_topic,
            s.kafka.group_id,
        )
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(HealthServer(self.registry, self.health, s.http.host, s.http.port))
            self.http_port = server.port
            log.info("metrics and health on http://%s:%d", s.http.host, server.port)
            if s.kafka.create_topics:
                ensure_topics(s.kafka, [s.kafka.input_topic, s.kafka.alerts_topic, s.kafka.dead_letter_topic])
            self._sink = stack.enter_context(KafkaSink(s.kafka))
            self._source = stack.enter_context(KafkaSource(s.kafka, self._on_assign, self._on_revoke))
            while not self._stop.is_set():
                records = self._source.poll()
                self.health.beat()
                self.metrics.last_loop.set(time.time())
                if records:
                    self._process(records)
                if max_events is not None and self.stats.events >= max_events:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
            log.info("stopping after %d events (%d alerts)", self.stats.events, self.stats.alerts)
        self.health.ready = False
        return self.stats

    def _process(self, records: list[Record]) -> None:
        """One batch: validate, score, alert, wait for acks, then commit (the order matters)."""
        assert self._sink is not None and self._source is not None
        t0 = time.perf_counter()
        now = self.clock()
        events, invalid = self._decode(records, now)
        scores = self._score(events, now)
        alerts = self.policy.alerts_for(events, scores, now) if events else []
        alerts_topic = self.settings.kafka.alerts_topic
        for a in alerts:
            self._sink.send(alerts_topic, a["stream_id"].encode(), dumps(a))
        self._sink.flush(FLUSH_TIMEOUT_S)  # raises DeliveryFailed: nothing below runs
        offsets: dict[Partition, int] = {}
        for r in records:
            key = (r.topic, r.partition)
            offsets[key] = max(offsets.get(key, 0), r.offset + 1)
        self._source.commit(offsets)
        self._account(records, events, invalid, scores, alerts, now, offsets, time.perf_counter() - t0)

    def _decode(self, records: list[Record], now: float) -> tuple[list[ParsedEvent], int]:
        rt = self.settings.runtime
        spec, sink, dlq = self.spec, self._sink, self.settings.kafka.dead_letter_topic
        assert sink is not None
        events: list[ParsedEvent] = []
        invalid = 0
        for r in records:
            try:
                if r.value is None:
                    raise InvalidEvent("empty", "message has no value")
                ev = spec.parse(r.value, rt.max_event_bytes)
                if ev.ts > now + rt.max_future_seconds or ev.ts < now - rt.max_past_seconds:
                    raise InvalidEvent("clock_skew", f"timestamp {ev.ts:.0f} too far from now {now:.0f}")
                events.append(ev)
            except InvalidEvent as exc:
                invalid += 1
                sink.send(
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
        return events, invalid

    def _score(self, events: list[ParsedEvent], now: float) -> BatchScores:
        return self.scorer.score_batch(events, now)

    def _account(
        self,
        records: list[Record],
        events: list[ParsedEvent],
        invalid: int,
        scores: BatchScores,
        alerts: list[dict[str, Any]],
        now: float,
        offsets: dict[Partition, int],
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
        st.committed.update(offsets)
        m.events.labels(result="scored").inc(len(events) - warming)
        m.events.labels(result="warming").inc(warming)
        m.events.labels(result="invalid").inc(invalid)
        for a in alerts:
            m.alerts.labels(severity=a["severity"]).inc()
        m.alerts_suppressed.inc(self.policy.suppressed_total - self._reported["suppressed"])
        self._reported["suppressed"] = self.policy.suppressed_total
        for v in scores.score[~scores.warming]:
            m.anomaly_score.observe(float(v))
        for e in events:
            m.event_lag.observe(max(now - e.ts, 0.0))
        m.batch_duration.observe(took)
        m.active_streams.set(len(self.table))
        m.evictions.inc(self.table.evictions - self._reported["evictions"])
        self._reported["evictions"] = self.table.evictions
        assert self._source is not None
        for p, lag in self._source.lag().items():
            m.consumer_lag.labels(partition=str(p)).set(lag)
