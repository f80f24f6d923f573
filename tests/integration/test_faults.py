"""Faults the daemon must survive, injected into a real broker of the test's own.

Broker restart mid-stream; a topic that rejects every write (alerts or state) for a while. In
each case: no crash, no offsets committed past unacknowledged work, nothing lost afterwards.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from detector.config import Settings
from detector.jsonl import read_jsonl
from detector.offline.evaluate import score_dataset
from tests.helpers import free_port, wait_for
from tests.integration.kafka_io import all_committed, committed, read_all
from tests.integration.test_pipeline import alert_everything_model, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTAGE_S = 10.0


def readiness(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=2).status  # type: ignore[no-any-return]
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


class Daemon:
    """`detector run` as a process; every event alerts (threshold below every score), so the
    alerts topic is the set of scored events, each with its score."""

    def __init__(
        self,
        settings: Settings,
        model_dir: Path,
        tmp: Path,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        """`prefix`: a command that execs the daemon's (same pid), e.g. into a sandbox."""
        self.prefix, self.env = list(prefix), env
        model = tmp / "model-alert-all"
        self.threshold = alert_everything_model(model_dir, model)
        cfg = settings.model_dump(mode="json")
        cfg["model"]["path"] = str(model)
        self.port = free_port()
        cfg["http"]["port"] = self.port
        self.config = tmp / "detector.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = tmp / "detector.log"
        self.states: list[int] = []
        self._stop = threading.Event()

    def __enter__(self) -> Daemon:
        self._out = open(self.log, "wb")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "detector.cli", "run", "--config", str(self.config)],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        self._watch = threading.Thread(target=self._watch_ready, daemon=True)
        self._watch.start()
        return self

    def _watch_ready(self) -> None:
        """Record every change of /readyz's status while the daemon runs."""
        while not self._stop.wait(0.1):
            code = readiness(f"http://127.0.0.1:{self.port}/readyz")
            if not self.states or self.states[-1] != code:
                self.states.append(code)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def settings(base: Settings, bootstrap: str, names: dict[str, str], model_dir: Path) -> Settings:
    data = settings_for(base, bootstrap, names, model_dir).model_dump()
    data["kafka"]["session_timeout_ms"] = 6000
    data["model"]["warmup_events"] = 0
    data["state"]["checkpoint_interval_seconds"] = 1.0
    return Settings(**data)


def paced_producer(bootstrap: str, topic: str, lines: list[bytes], rate: float) -> threading.Thread:
    """Produce `lines` at `rate` per second with librdkafka, which buffers and retries through an
    outage (message.timeout.ms 5 min), as a production producer would."""
    from confluent_kafka import Producer

    def run() -> None:
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
        tick = threading.Event()
        for i, x in enumerate(lines):
            if i % 50 == 0:
                tick.wait(50 / rate)  # pacing of the load, not a wait for a condition
            p.produce(topic, x, orjson.loads(x)["stream_id"].encode())
            p.poll(0)
        assert p.flush(300) == 0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def scored(bootstrap: str, topic: str) -> dict[str, float]:
    """event id -> score, from the alerts (the first of duplicates; re-scores give the same)."""
    out: dict[str, float] = {}
    for m in read_all(bootstrap, topic):
        a = orjson.loads(m.value)
        out.setdefault(a["event_id"], a["score"])
    return out


def test_broker_restart_mid_stream_loses_nothing(  # type: ignore[no-untyped-def]
    own_broker, names, small_settings, model_dir, test_file, tmp_path: Path
) -> None:
    s = settings(small_settings, own_broker.bootstrap, names, model_dir)
    lines = list(read_jsonl(test_file))
    ids = [orjson.loads(x)["event_id"] for x in lines]
    with Daemon(s, model_dir, tmp_path) as d:
        wait_for(lambda: d.states and d.states[-1] == 200, 120, "the daemon ready")
        producer = paced_producer(own_broker.bootstrap, names["input"], lines, rate=len(lines) / 20)
        wait_for(
            lambda: len(read_all(own_broker.bootstrap, names["alerts"])) > len(lines) // 10,
            60,
            "a tenth of the replay scored",
        )
        assert own_broker.script("stop").returncode == 0
        threading.Event().wait(OUTAGE_S)  # the outage itself: the broker stays down this long
        assert own_broker.script("start").returncode == 0
        producer.join(300)
        wait_for(
            lambda: all_committed(own_broker.bootstrap, names["group"], names["input"]),
            240,
            "every offset committed after the outage",
        )
        rc = d.stop()
        out = d.output()
        assert rc == 0, out[-3000:]
        # /readyz went not-ready during the outage and ready again after it.
        first_ready = d.states.index(200)
        assert 503 in d.states[first_ready:], (d.states, out[-3000:])
        assert 200 in d.states[d.states.index(503, first_ready) :], d.states
    assert "Kafka failure" in out or "Kafka has not acknowledged" in out, out[-3000:]
    got = scored(own_broker.bootstrap, names["alerts"])
    missing = set(ids) - set(got)
    assert not missing, f"{len(missing)} events never scored, e.g. {sorted(missing)[:5]}"
    assert_uninterrupted_scores(got, s, model_dir, test_file, d.threshold)


def assert_uninterrupted_scores(
    got: dict[str, float], s: Settings, model_dir: Path, data: Path, threshold: float
) -> None:
    """Every event's score from the daemon (alerts carry it, rounded to 6 decimals) equals the
    score of an uninterrupted offline run, and so the same events cross the model's threshold."""
    _, ds, r = score_dataset(s, model_dir, data)
    offline = {e.event_id: float(v) for e, v in zip(ds.events, r.score, strict=True)}
    assert len(offline) > 1000 and set(offline) <= set(got)
    tol = 1e-4 * max(float(np.median(r.score)), 1e-3) + 1e-6
    worst = max(abs(got[k] - v) for k, v in offline.items())
    assert worst <= tol, f"a score moved by {worst} (tolerance {tol})"
    expected = {e.event_id for e, a in zip(ds.events, r.alert, strict=True) if a}
    assert {e for e in offline if got[e] > threshold} == expected


def set_max_message_bytes(bootstrap: str, topic: str, value: int | None) -> None:
    """Make a topic reject every record bigger than `value` bytes (None: back to the default)."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        configs = {"max.message.bytes": str(value) if value is not None else "1048588"}
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        admin.close()


def metric(port: int, name: str) -> float:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return -1.0
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith((name + " ", name + "{")))


@pytest.mark.parametrize("broken", ["alerts", "state"])
def test_unwritable_topic_stops_commits_and_loses_nothing(  # type: ignore[no-untyped-def]
    broken, broker, names, small_settings, model_dir, test_file, tmp_path: Path
) -> None:
    """The alerts topic (or the state changelog) rejects every write for a while: the daemon
    commits nothing past the unacknowledged work, reports not ready, keeps running, and once the
    topic accepts writes again every event is scored and alerted as in an uninterrupted run."""
    from tests.integration.kafka_io import produce

    s = settings(small_settings, broker.bootstrap, names, model_dir)
    lines = list(read_jsonl(test_file))
    ids = [orjson.loads(x)["event_id"] for x in lines]
    keyed = [(orjson.loads(x)["stream_id"].encode(), x) for x in lines]
    third = len(lines) // 3
    with Daemon(s, model_dir, tmp_path) as d:
        wait_for(lambda: d.states and d.states[-1] == 200, 120, "the daemon ready")
        produce(broker.bootstrap, names["input"], keyed[:third])
        wait_for(
            lambda: all_committed(broker.bootstrap, names["group"], names["input"]),
            60,
            "the first third committed",
        )
        # An alert is ~600 bytes and a state record ~1.9 KB: 200 bytes rejects every one of them.
        set_max_message_bytes(broker.bootstrap, names[broken], 200)
        before = committed(broker.bootstrap, names["group"], names["input"])
        produce(broker.bootstrap, names["input"], keyed[third:])
        if broken == "alerts":
            # Backpressure: the input is paused and the rejected alerts re-sent; nothing is re-read.
            wait_for(lambda: metric(d.port, "detector_input_paused") == 1, 90, "input paused")
            wait_for(lambda: metric(d.port, "detector_output_retries_total") >= 1, 60, "alerts re-sent")
            consumed, retries = metric(d.port, "detector_events_total"), metric(d.port, "detector_output_retries_total")
            wait_for(lambda: metric(d.port, "detector_output_retries_total") > retries, 60, "alerts re-sent again")
            assert metric(d.port, "detector_events_total") == consumed  # paused: no event read meanwhile
            assert metric(d.port, "detector_session_restarts_total") == 0
        else:
            wait_for(lambda: metric(d.port, "detector_session_restarts_total") >= 2, 90, "failures survived")
            assert metric(d.port, "detector_checkpoint_failures_total") >= 1
        assert d.proc.poll() is None
        assert readiness(f"http://127.0.0.1:{d.port}/readyz") == 503 or 503 in d.states
        assert committed(broker.bootstrap, names["group"], names["input"]) == before  # nothing past the fault
        set_max_message_bytes(broker.bootstrap, names[broken], None)
        wait_for(
            lambda: all_committed(broker.bootstrap, names["group"], names["input"]),
            120,
            "every offset committed once the topic accepts writes",
        )
        assert d.stop() == 0, d.output()[-3000:]
    got = scored(broker.bootstrap, names["alerts"])
    assert not set(ids) - set(got)
    assert_uninterrupted_scores(got, s, model_dir, test_file, d.threshold)
