"""The real broker: one Apache Kafka (KRaft) started by deploy/kafka/broker for the session.

When it cannot start, every integration test errors (never skips): CI must not pass without Kafka.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
BROKER = ROOT / "deploy" / "kafka" / "broker"


@dataclass(frozen=True)
class Broker:
    port: int
    data_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def script(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BROKER), command, "--port", str(self.port), "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=180,
        )


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(free_port(pairs=2), tmp_path_factory.mktemp("kafka"))
    r = b.script("start")
    if r.returncode != 0:
        log = b.data_dir / "broker.log"
        tail = log.read_text()[-3000:] if log.exists() else ""
        pytest.fail(f"could not start the Kafka broker: {r.stderr}\n{tail}", pytrace=False)
    try:
        yield b
    finally:
        b.script("stop")


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker this test may stop and start (the session's broker serves the other tests)."""
    b = Broker(free_port(pairs=2), tmp_path / "kafka")
    r = b.script("start")
    if r.returncode != 0:
        pytest.fail(f"could not start the Kafka broker: {r.stderr}", pytrace=False)
    try:
        yield b
    finally:
        b.script("stop")


# Every test that takes `names` runs once per Kafka client backend (kafka.client).
CLIENTS = ["kafka-python", "confluent"]


def _names(client: str) -> dict[str, str]:
    u = uuid.uuid4().hex[:8]
    return {
        "client": client,
        "input": f"events-{u}",
        "alerts": f"alerts-{u}",
        "dlq": f"dlq-{u}",
        "verdicts": f"verdicts-{u}",
        "state": f"state-{u}",
        "group": f"group-{u}",
    }


@pytest.fixture(params=CLIENTS)
def names(request: pytest.FixtureRequest) -> dict[str, str]:
    """Unique topic and group names for one test, and the backend under test ("client")."""
    return _names(request.param)


@pytest.fixture
def default_names() -> dict[str, str]:
    """As `names`, for tests of what the backend does not change: the default client only."""
    return _names(CLIENTS[0])


def require(tool: str) -> str:
    """The path of a command the test needs; a missing one fails the test (never skips)."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make system-deps` (Debian packages)", pytrace=False)
    return path
