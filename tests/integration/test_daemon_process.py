"""`detector run` as users run it: a process, configured by file and environment, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml

from detector.jsonl import read_jsonl
from tests.helpers import free_port, wait_for
from tests.integration.kafka_io import produce, read_all

pytestmark = pytest.mark.integration


def http_status(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=2).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def metric(url: str, name: str) -> float:
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith(name))


def test_run_process_scores_serves_metrics_and_exits_0_on_sigterm(  # type: ignore[no-untyped-def]
    broker, names, small_settings, model_dir, test_file, tmp_path: Path
) -> None:
    cfg = small_settings.model_dump(mode="json")
    cfg["model"]["path"] = str(model_dir)
    cfg["kafka"].update(
        input_topic=names["input"],
        alerts_topic=names["alerts"],
        dead_letter_topic=names["dlq"],
        verdicts_topic=names["verdicts"],
        state_topic=names["state"],  # a changelog shared with another test's run would skip its offsets
        group_id=names["group"],
        client=names["client"],
        bootstrap_servers="unused:1",
    )
    path = tmp_path / "detector.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port = free_port()
    env = {**os.environ, "DETECTOR__KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap, "DETECTOR__HTTP__PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector.cli", "run", "--config", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_status(f"{base}/readyz") == 200, 90, "/readyz to turn 200")
        assert http_status(f"{base}/healthz") == 200
        assert http_status(f"{base}/nothing-else") == 404
        lines = list(read_jsonl(test_file))[:3000]
        produce(broker.bootstrap, names["input"], [(orjson.loads(x)["stream_id"].encode(), x) for x in lines])
        wait_for(lambda: metric(f"{base}/metrics", "detector_events_total") >= len(lines), 60, "events scored")
        alerts_seen = metric(f"{base}/metrics", "detector_alerts_total")
        proc.send_signal(signal.SIGTERM)
        # The shutdown budget (runtime.shutdown_timeout_seconds) is 20 s; allow it plus start-up noise.
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert rc == 0, out[-3000:]
    assert "effective config" in out and "stopping after" in out
    assert len(read_all(broker.bootstrap, names["alerts"], expect=int(alerts_seen))) == int(alerts_seen)


def test_bad_config_stops_startup_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kafka:\n  poll_timeout_ms: soon\n")
    r = subprocess.run(
        [sys.executable, "-m", "detector.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.strip().startswith("config error: kafka.poll_timeout_ms")
