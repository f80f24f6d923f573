"""What every end-to-end benchmark uses: a local broker (started here, stopped here, 127.0.0.1
only), simulated card lines, bulk loading, the bare consumer ceiling, and `detector run` as its
own process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from detector.config import Settings
from simulators.cards import simulate_cards
from simulators.output import card_records
from simulators.scenario import Scenario

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    import socket

    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            p = a.getsockname()[1]
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", p + 1))
                return p
            except OSError:
                continue
    raise RuntimeError("no free port pair")


class LocalBroker:
    def __init__(self) -> None:
        self.port, self.dir = free_port(), Path(tempfile.mkdtemp(prefix="bench-kafka-"))

    def __enter__(self) -> LocalBroker:
        subprocess.run(
            [str(ROOT / "deploy/kafka/broker"), "start", "--port", str(self.port), "--data-dir", str(self.dir)],
            check=True,
            capture_output=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            [str(ROOT / "deploy/kafka/broker"), "stop", "--port", str(self.port), "--data-dir", str(self.dir)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def card_lines(n: int, streams: int, seed: int) -> list[bytes]:
    cols = simulate_cards(streams, 60, Scenario(), seed)
    recs = list(card_records(cols))
    while len(recs) < n:  # more days of the same cards if the period was too short
        recs += recs[: n - len(recs)]
    return [orjson.dumps(r) for r in recs[:n]]


def produce(bootstrap: str, topic: str, lines: list[bytes], client: str = "kafka-python") -> None:
    """Bulk load through `client` (acks=1, large batches): also the bench's produce-rate probe."""
    keys = [orjson.loads(x)["stream_id"].encode() for x in lines]
    if client == "confluent":
        from confluent_kafka import Producer

        cp = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 20, "batch.size": 512 * 1024})
        for k, x in zip(keys, lines, strict=True):
            while True:
                try:
                    cp.produce(topic, x, k)
                    break
                except BufferError:
                    cp.poll(0.05)
            cp.poll(0)
        cp.flush()
        return
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=512 * 1024)
    for k, x in zip(keys, lines, strict=True):
        p.send(topic, key=k, value=x)
    p.flush()
    p.close()


def bare_consume(bootstrap: str, topic: str, n: int, client: str = "kafka-python") -> float:
    """The client's own ceiling: consume `n` records in batches of 2,000, do nothing with them."""
    got, t0 = 0, None
    if client == "confluent":
        from confluent_kafka import Consumer

        cc = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bare-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        cc.subscribe([topic])
        while got < n:
            msgs = cc.consume(2000, 0.5)
            if msgs:
                t0 = t0 or time.perf_counter()
                got += len(msgs)
        dt = time.perf_counter() - (t0 or time.perf_counter())
        cc.close()
        return n / dt
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bare-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2000,
    )
    while got < n:
        for recs in c.poll(timeout_ms=500).values():
            t0 = t0 or time.perf_counter()
            got += len(recs)
    dt = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    return n / dt


def daemon_settings(base: Settings, bootstrap: str, topic: str, model: Path, tag: str, client: str) -> Settings:
    d = base.model_dump()
    d["kafka"].update(
        client=client,
        bootstrap_servers=bootstrap,
        input_topic=topic,
        alerts_topic=f"alerts-{tag}",
        dead_letter_topic=f"dlq-{tag}",
        verdicts_topic=f"verdicts-{tag}",
        state_topic=f"state-{tag}",
        group_id=f"det-{tag}",
    )
    d["model"]["path"] = model
    d["http"]["port"] = 0
    return Settings(**d)


def daemon(s: Settings, tmp: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    """`detector run` as its own process (as users run it), config by file."""
    import yaml

    cfg = tmp / f"{s.kafka.group_id}.yaml"
    cfg.write_text(yaml.safe_dump(s.model_dump(mode="json")))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "detector.cli", "run", "--config", str(cfg), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def ready(port: int) -> bool:
    import urllib.request

    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200
    except OSError:
        return False


def wait_ready(p: subprocess.Popen[bytes], port: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready(port):
        if p.poll() is not None:
            out = p.stdout.read().decode(errors="replace") if p.stdout else ""
            raise RuntimeError(f"detector run exited with {p.returncode} before ready:\n{out[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"detector run not ready within {timeout:.0f}s")
        time.sleep(0.05)


def train_model(base: Settings, tmp: Path, smoke: bool) -> Path:
    from detector.jsonl import write_jsonl
    from detector.offline.training import train_from_file

    data = tmp / "train.jsonl"
    write_jsonl(card_records(simulate_cards(300 if smoke else 2000, 30, Scenario(), 5)), str(data))
    d = base.model_dump()
    d["model"]["epochs"] = 2 if smoke else 8
    model = tmp / "model"
    train_from_file(Settings(**d), data, model, log=lambda _m: None)
    return model
