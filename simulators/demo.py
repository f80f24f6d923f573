"""`detector demo` (what `make demo` runs): the whole product on a local broker, then a summary.
A development tool beside the simulators, not part of the daemon.

Steps, each printed as it happens: start the local broker (unless one already answers), simulate
training and test streams, train the default model if none exists, start `detector run` as a
process, replay the simulated fraud stream, wait until the daemon has consumed all of it, read the
alerts back, print precision and recall against the simulator's labels, stop what it started.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from detector import __version__
from detector.config import Settings, load_config

ROOT = Path.cwd()
BROKER = ROOT / "deploy" / "kafka" / "broker"
DATA = ROOT / "data"
# Demo sizes: big enough for a meaningful precision/recall, small enough to train in ~1 minute.
TRAIN = {"streams": 2000, "days": 30, "seed": 101}
TEST_DAYS, TEST_SEED = 30, 202


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def _metric(url: str, name: str) -> float:
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode()  # noqa: S310 - our own localhost port
    except OSError:
        return -1.0
    return sum(float(x.split()[-1]) for x in body.splitlines() if x.startswith(name + "{") or x.startswith(name + " "))


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)  # a CLI progress loop, not a test


# Model keys that do not change what training produces.
_RUNTIME_KEYS = ("path", "watch_seconds", "warmup_events")


def _stale(model: Path, settings: Settings) -> str | None:
    """Why the model folder must be (re)trained for this config, or None: missing, or trained by
    another detector version or with other `model` settings (evidence_seconds, say)."""
    try:
        meta = orjson.loads((model / "metadata.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return "no model there yet"
    if meta.get("detector_version") != __version__:
        return f"the existing one was trained by detector {meta.get('detector_version')}, this is {__version__}"
    saved = dict(meta.get("training", {}).get("model_config", {}))
    now = settings.model.model_dump(mode="json")
    changed = sorted(k for k in now if k not in _RUNTIME_KEYS and saved.get(k) != now[k])
    return f"the existing one was trained with other model settings ({', '.join(changed)})" if changed else None


def _simulate(streams: int, days: int, seed: int, out: Path) -> None:
    from simulators.cli import simulate

    simulate("cards", streams, days, "config/scenarios/default.yaml", seed, str(out))


def demo(args: argparse.Namespace) -> int:
    cfg_path = args.config or "config/detector.yaml"
    settings = load_config(cfg_path)
    port, py = args.port, sys.executable
    bootstrap = f"127.0.0.1:{port}"
    started_broker = False
    daemon: subprocess.Popen[bytes] | None = None
    console: subprocess.Popen[bytes] | None = None
    data_dir = ROOT / ".cache" / "demo-kafka"
    try:
        say(f"starting a local Apache Kafka broker on {bootstrap}")
        r = subprocess.run(
            [str(BROKER), "status", "--port", str(port), "--data-dir", str(data_dir)], capture_output=True, text=True
        )
        if r.returncode != 0:
            subprocess.run([str(BROKER), "start", "--port", str(port), "--data-dir", str(data_dir)], check=True)
            started_broker = True
        else:
            print("broker already running: using it")
        DATA.mkdir(exist_ok=True)
        train_file = DATA / "demo-train.jsonl.gz"
        test_file = DATA / f"demo-test-{args.streams}.jsonl"
        if not train_file.exists():
            say(f"simulating {TRAIN['streams']} cards x {TRAIN['days']} days of training data")
            _simulate(TRAIN["streams"], TRAIN["days"], TRAIN["seed"], train_file)
        if not test_file.exists():
            say(f"simulating the fraud stream to replay: {args.streams} cards x {TEST_DAYS} days (another seed)")
            _simulate(args.streams, TEST_DAYS, TEST_SEED, test_file)
        model = settings.model.path
        stale = _stale(Path(model), settings)
        if stale:
            say(f"training the default model into {model} (seeded): {stale}")
            subprocess.run(
                [
                    py,
                    "-m",
                    "detector.cli",
                    "train",
                    "--config",
                    cfg_path,
                    "--data",
                    str(train_file),
                    "--out",
                    str(model),
                ],
                check=True,
            )
        else:
            say(f"using the existing model in {model}")
        run_id = time.strftime("%Y%m%d%H%M%S")
        topics = {
            "INPUT_TOPIC": f"demo-events-{run_id}",
            "ALERTS_TOPIC": f"demo-alerts-{run_id}",
            "DEAD_LETTER_TOPIC": f"demo-dlq-{run_id}",
            "VERDICTS_TOPIC": f"demo-verdicts-{run_id}",
            "GROUP_ID": f"demo-{run_id}",
        }
        env = {
            **os.environ,
            "DETECTOR__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            **{f"DETECTOR__KAFKA__{k}": v for k, v in topics.items()},
        }
        metrics_url = f"http://{settings.http.host}:{settings.http.port}/metrics"
        say(f"starting the daemon: detector run (metrics on {metrics_url})")
        daemon = subprocess.Popen([py, "-m", "detector.cli", "run", "--config", cfg_path], env=env)
        ready = metrics_url.replace("/metrics", "/readyz")

        def is_ready() -> bool:
            try:
                return urllib.request.urlopen(ready, timeout=2).status == 200  # noqa: S310
            except (urllib.error.URLError, OSError):
                if daemon is not None and daemon.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {daemon.returncode}") from None
                return False

        _wait(is_ready, 120, "the daemon to become ready")
        n_events = sum(1 for _ in open(test_file, "rb"))
        say(f"replaying {n_events} simulated events (with fraud incidents) into {topics['INPUT_TOPIC']}")
        subprocess.run(
            [
                py,
                "-m",
                "detector.cli",
                "replay",
                str(test_file),
                "--topic",
                topics["INPUT_TOPIC"],
                "--bootstrap-servers",
                bootstrap,
                "--as-fast-as-possible",
            ],
            check=True,
        )
        say("waiting for the daemon to score every event")
        _wait(lambda: _metric(metrics_url, "detector_events_total") >= n_events, 300, "all events scored")
        alerts = _read_alerts(bootstrap, topics["ALERTS_TOPIC"], int(_metric(metrics_url, "detector_alerts_total")))
        _summary(test_file, alerts, metrics_url)
        console = _console(py, cfg_path, env, settings, run_id)
        return 0
    finally:
        if console is not None and console.poll() is None:
            say("stopping the console")
            console.send_signal(signal.SIGTERM)
            try:
                console.wait(timeout=15)
            except subprocess.TimeoutExpired:
                console.kill()
        if daemon is not None and daemon.poll() is None:
            say("stopping the daemon (SIGTERM)")
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=settings.runtime.shutdown_timeout_seconds + 10)
            except subprocess.TimeoutExpired:
                daemon.kill()
        if started_broker:
            say("stopping the local broker")
            subprocess.run([str(BROKER), "stop", "--port", str(port), "--data-dir", str(data_dir)], check=False)


def _console(
    py: str, cfg_path: str, env: dict[str, str], settings: Settings, run_id: str
) -> subprocess.Popen[bytes] | None:
    """`detector console` beside the daemon, on this run's topics, with a fresh login; it stays
    until the user presses Enter (at once when stdin is not a terminal: tests, CI)."""
    from detector.console.users import add_user

    users, password = DATA / "demo-console-users", secrets.token_urlsafe(9)
    add_user(users, "analyst", password)
    env = {
        **env,
        "DETECTOR__CONSOLE__USERS_FILE": str(users),
        "DETECTOR__CONSOLE__DB_PATH": str(DATA / f"demo-console-{run_id}.sqlite"),
        "DETECTOR__CONSOLE__GROUP_ID": f"demo-console-{run_id}",
    }
    c = settings.console
    url = f"http://{c.host}:{c.port}"
    say(f"starting the analysts' console: detector console ({url})")
    proc = subprocess.Popen([py, "-m", "detector.cli", "console", "--config", cfg_path], env=env)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the console exited with {proc.returncode}")
        try:
            return urllib.request.urlopen(url + "/healthz", timeout=2).status == 200  # noqa: S310 - our own port
        except OSError:
            return False

    _wait(up, 60, "the console to answer")
    print(f"  console           {url}  (log in as analyst / {password})")
    print("  triage an alert there: a legit verdict quiets its card; the daemon counts verdicts")
    if sys.stdin.isatty():
        input("\npress Enter to stop the console, the daemon and the broker ")
    return proc


def _read_alerts(bootstrap: str, topic: str, expect: int) -> list[dict[str, object]]:
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    out = []
    try:
        for m in c:
            out.append(orjson.loads(m.value))
            if len(out) >= expect:
                break
    finally:
        c.close()
    return out


def _summary(test_file: Path, alerts: list[dict[str, object]], metrics_url: str) -> None:
    labels: dict[str, int] = {}
    incidents: dict[str, str | None] = {}
    for line in open(test_file, "rb"):
        ev = orjson.loads(line)
        labels[ev["event_id"]] = int(ev["label"])
        incidents[ev["event_id"]] = ev["incident_id"]
    alerted = {str(a["event_id"]) for a in alerts}
    tp = sum(labels[e] for e in alerted)
    fraud = sum(labels.values())
    all_inc = {i for i in incidents.values() if i}
    caught = {incidents[e] for e in alerted if incidents[e]}
    precision = tp / len(alerted) if alerted else 0.0
    recall = tp / fraud if fraud else 0.0
    print("\n==> summary")
    print(f"  events scored     {len(labels)}")
    print(f"  alerts raised     {len(alerted)}  ({tp} on fraud events)")
    print(f"  precision         {precision:.3f}")
    print(f"  recall (events)   {recall:.3f}  ({tp}/{fraud} fraud events)")
    print(f"  incidents caught  {len(caught)}/{len(all_inc)}")
    print(f"  metrics           {metrics_url} (while the daemon runs); alerts on the alerts topic")
