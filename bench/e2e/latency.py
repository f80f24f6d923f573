"""Event-to-alert latency at a fixed offered rate of live traffic: the simulated events, their
timestamps shifted to end now, every 50th made blatantly anomalous (a huge ATM withdrawal in an
unknown country), timed from the producer's send to their alert read by a consumer."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.e2e.diagnosis import diagnose
from bench.e2e.harness import daemon, daemon_settings, free_port, wait_ready
from detector.config import Settings
from detector.core.features import parse_timestamp

# The latency load's producer linger, librdkafka's own default: 5 ms. With 0 (before 2026-12-02)
# the load generator sent 5,000 one-event requests a second, and on these 2 cores the broker fell
# behind them: produce to readable took p50 0.7-2 s with the daemon running (0.5 ms to 0.8 s
# without it); with 5 ms, p50 4-10 ms, and event-to-alert p50 15 / 12 / 12 ms against 1,132 /
# 943 / 754 in runs side by side. BENCH_LOAD_LINGER_MS overrides it for experiments.
LOAD_LINGER_MS = float(os.environ.get("BENCH_LOAD_LINGER_MS", "5"))

# Seconds of the same load offered before the measured window of each latency run. A freshly
# started daemon on fresh topics is slower at first: measured second by second (BENCH_METRICS=1,
# 2026-12-02, 5,000 events/s, 20 s runs, checkpoints every 5 s), p99 253-434 ms in the load's first
# second and 105-172 ms in the second of its first checkpoint (every stream new), against 20-55 ms
# in the other seconds, the later checkpoints included. That start is reported on its own
# (`cold_start_p99_ms`); the percentiles are the steady state's, after the first checkpoint.
LEAD_S = float(os.environ.get("BENCH_LEAD_S", "8"))
# Every MARK_EVERY-th event of the load is the blatant anomaly whose alert is timed.
MARK_EVERY = 50
DIAGNOSE = bool(os.environ.get("BENCH_METRICS"))


class AlertReader:
    """A librdkafka consumer of the alerts topic on its own thread: it fetches on its own C thread,
    so the harness's producing loop (this process) cannot delay a fetch, only the timestamping.
    Assigned, not subscribed: no group join that could still be running when the load starts."""

    def __init__(self, bootstrap: str, topic: str, tag: str, isolation: str = "read_uncommitted") -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.got: dict[str, float] = {}  # event id -> when its alert was read
        self.detected: dict[str, float] = {}  # event id -> the alert's detected_at
        self.read_upto: dict[int, int] = {}  # last offset read per partition (diagnosis)
        self.errors: list[str] = []  # consumer errors and undecodable alerts (diagnosis)
        self.last_at = time.monotonic()  # when the last alert was read
        self.cons = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"lat-reader-{tag}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
                "isolation.level": isolation,
            }
        )
        self.parts = self.cons.list_topics(topic, timeout=10).topics[topic].partitions
        self.cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in self.parts])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            m = self.cons.poll(0.05)  # one message: consume(n, t) would wait t for n of them
            if m is None:
                continue
            if m.error() is not None:
                self.errors.append(f"{time.time():.3f} {m.error()}")
                continue
            now = time.time()
            self.last_at = time.monotonic()
            self.read_upto[m.partition()] = m.offset()
            try:
                a = orjson.loads(m.value() or b"{}")
                self.got.setdefault(a["event_id"], now)
                self.detected.setdefault(a["event_id"], parse_timestamp(a["detected_at"]))
            except Exception as exc:  # noqa: BLE001 - recorded, and the reader goes on
                self.errors.append(f"{now:.3f} {m.partition()}:{m.offset()} {exc!r}")

    def wait_for(self, ids: dict[str, float], timeout: float, quiet: float = 2.0) -> None:
        """Until every id's alert is read, or none has come for `quiet` seconds (some anomalies
        never alert), or `timeout`."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and time.monotonic() - self.last_at < quiet:
            if all(k in self.got for k in ids):
                break
            time.sleep(0.1)
        self._stop.set()
        self._thread.join(5)


class InputWatch:
    """BENCH_METRICS=1: when each marked event becomes readable from the input topic."""

    def __init__(self, bootstrap: str, topic: str, tag: str) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        if not DIAGNOSE:
            return
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"in-{tag}", "fetch.wait.max.ms": 5})
        c.assign(
            [
                TopicPartition(topic, p, OFFSET_BEGINNING)
                for p in c.list_topics(topic, timeout=10).topics[topic].partitions
            ]
        )

        def read() -> None:
            while not self._stop.is_set():
                m = c.poll(0.05)
                v = m.value() if m is not None and m.error() is None else None
                if v and b'"ZZ"' in v:  # the marked anomalies carry country ZZ
                    self.seen.setdefault(orjson.loads(v)["event_id"], time.time())

        threading.Thread(target=read, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def offer(bootstrap: str, topic: str, lines: list[bytes], rate: float, n_lead: int, tag: str) -> dict[str, Any]:
    """Offer `lines` at `rate` through a confluent producer (linger LOAD_LINGER_MS); each marked
    event is timestamped before it is handed to the producer, so the linger counts."""
    from confluent_kafka import Producer

    prod = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": LOAD_LINGER_MS})
    failed: list[str] = []  # events the load generator could not deliver: not the daemon's to score

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(f"{orjson.loads(msg.value())['event_id']}: {err}")

    sent: dict[str, float] = {}
    cold: set[str] = set()  # the lead-in's anomalies
    # Events keep their simulated spacing, shifted to end now. (Re-stamping every event "now"
    # made each card buy every 2 s: a velocity anomaly on every event, so the run measured an
    # alert storm of ~100% of events instead of live traffic.)
    event_ts = [parse_timestamp(orjson.loads(x)["ts"]) for x in lines]
    shift = time.time() - max(event_ts)
    t0, wall0 = time.monotonic(), time.time()
    for i, x in enumerate(lines):
        wait = t0 + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        ev = orjson.loads(x)
        ev["event_id"] = f"{tag}-{i}"
        ev["ts"] = event_ts[i] + shift
        if i % MARK_EVERY == MARK_EVERY - 1:
            ev.update(amount=9e6, country="ZZ", channel="atm", merchant_category="jewelry")
            sent[ev["event_id"]] = time.time()
            if i < n_lead:
                cold.add(ev["event_id"])
        prod.produce(topic, orjson.dumps(ev), ev["stream_id"].encode(), on_delivery=delivered)
        prod.poll(0)
    load_s = time.monotonic() - t0
    prod.flush()
    offered = len(lines) / (time.monotonic() - t0)
    return {"sent": sent, "cold": cold, "wall0": wall0, "load_s": load_s, "offered": offered, "failed": failed}


def _pct(xs: np.ndarray, q: float) -> float | None:
    return float(np.percentile(xs, q)) if len(xs) else None


def summary(rate: float, n: int, lead_s: float, load: dict[str, Any], reader: AlertReader) -> dict[str, Any]:
    sent, cold, got, detected = load["sent"], load["cold"], reader.got, reader.detected
    measured = [k for k in sent if k not in cold]
    lat = np.array([got[k] - sent[k] for k in measured if k in got]) * 1000
    # Where the time goes: produce to scored (the daemon's detected_at) and scored to read.
    inside = np.array([detected[k] - sent[k] for k in measured if k in got]) * 1000
    after = np.array([got[k] - detected[k] for k in measured if k in got]) * 1000
    first = np.array([got[k] - sent[k] for k in cold if k in got]) * 1000
    return {
        "offered_per_s": rate,
        "sent": n,
        "lead_in_s": lead_s,
        "cold_start_p99_ms": _pct(first, 99),
        "anomalies": len(measured),
        "alerts_read": len(lat),
        "alerts_total": len(got) - len(cold & got.keys()),
        "load_delivery_failures": load["failed"][:10],
        "p50_ms": _pct(lat, 50),
        "p95_ms": _pct(lat, 95),
        "p99_ms": _pct(lat, 99),
        "sent_to_scored_p50_p99_ms": [float(np.percentile(inside, q)) for q in (50, 99)] if len(lat) else None,
        "scored_to_read_p50_p99_ms": [float(np.percentile(after, q)) for q in (50, 99)] if len(lat) else None,
        "achieved_offer_per_s": load["offered"],
        "cdf_ms": [float(v) for v in np.percentile(lat, np.arange(101))] if len(lat) else [],
    }


def latency(
    base: Settings,
    bootstrap: str,
    model: Path,
    lines: list[bytes],
    rate: float,
    seconds: float,
    tmp: Path,
    client: str,
    lead_s: float | None = None,
    delivery: str = "at_least_once",
) -> dict[str, Any]:
    """The daemon on `client`, the load offered by a confluent producer, alerts read by a confluent
    consumer. The same load runs `lead_s` seconds (default LEAD_S) before the `seconds` measured:
    the percentiles are the steady state's, and the lead-in's anomalies give `cold_start_p99_ms`.
    With `delivery` exactly_once the reader is read_committed, as that mode's readers are."""
    lead_s = LEAD_S if lead_s is None else lead_s
    tag = uuid.uuid4().hex[:6]
    topic = f"lat-{tag}"
    d = daemon_settings(base, bootstrap, topic, model, tag, client).model_dump()
    d["model"]["warmup_events"] = 0  # a stream's first events may be the marked ones
    d["http"]["port"] = port = free_port()
    d["kafka"]["delivery"] = delivery
    s = Settings(**d)
    if DIAGNOSE:  # the broker stamps each alert as it appends it
        from confluent_kafka.admin import AdminClient, NewTopic

        fs = AdminClient({"bootstrap.servers": bootstrap}).create_topics(
            [NewTopic(s.kafka.alerts_topic, 4, 1, config={"message.timestamp.type": "LogAppendTime"})]
        )
        for f in fs.values():
            f.result(10)
    proc = daemon(s, tmp, [])
    wait_ready(proc, port)
    committed = "read_committed" if delivery == "exactly_once" else "read_uncommitted"
    reader = AlertReader(bootstrap, s.kafka.alerts_topic, tag, committed)
    watch = InputWatch(bootstrap, topic, tag)
    n_lead, n = int(rate * lead_s), int(rate * seconds)
    if len(lines) < n_lead + n:
        raise ValueError(f"{len(lines)} lines for {n_lead + n} events ({lead_s:.0f} s lead-in + {seconds:.0f} s)")
    load = offer(bootstrap, topic, lines[: n_lead + n], rate, n_lead, tag)
    # exactly_once: alerts come when their transaction commits, every checkpoint interval.
    quiet = 2.0 + (s.state.checkpoint_interval_seconds + 2.0 if delivery == "exactly_once" else 0.0)
    reader.wait_for(load["sent"], 30, quiet)
    watch.stop()
    if DIAGNOSE:
        print(f"reader stopped {time.time():.3f}; errors: {reader.errors[:10]}")
        diagnose(bootstrap, s.kafka.alerts_topic, reader.parts, port, load["sent"], watch.seen, reader.detected,
                 reader.got, load["wall0"], load["load_s"], reader.cons, reader.read_upto)  # fmt: skip
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    if DIAGNOSE:
        print("daemon warnings:", [x for x in out.decode(errors="replace").splitlines() if "WARN" in x or "ERROR" in x])
    reader.cons.close()
    return summary(rate, n, lead_s, load, reader)
