"""The daemon over SASL_SSL (SCRAM-SHA-512) to a real broker started with a TLS listener.

Certificates are generated here with openssl; the SCRAM user is created by Kafka's own storage
tool at format time. A plaintext listener stays open on the broker for the test's own helpers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from detector.config import Settings
from detector.jsonl import read_jsonl
from detector.service.loop import Detector
from tests.helpers import free_port, wait_for
from tests.integration.conftest import Broker, require
from tests.integration.kafka_io import produce, read_all
from tests.integration.test_pipeline import settings_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
USER, PASSWORD = "detector", "scram-secret-4711"


@dataclass(frozen=True)
class SecureBroker:
    plain: Broker
    sasl_port: int
    ca: Path

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"


def make_certificates(d: Path) -> tuple[Path, Path, str]:
    """A CA, and a broker certificate for 127.0.0.1 signed by it, as a PKCS12 keystore."""
    openssl = require("openssl")
    store_pass = "keystore-pass"

    def run(*args: str) -> None:
        r = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=detector-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    run("pkcs12", "-export", "-in", "broker.crt", "-inkey", "broker.key", "-out", "broker.p12",
        "-passout", f"pass:{store_pass}")  # fmt: skip
    return d / "ca.crt", d / "broker.p12", store_pass


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    d = tmp_path_factory.mktemp("secure-kafka")
    ca, keystore, store_pass = make_certificates(d)
    plain = Broker(free_port(pairs=2), d / "data")
    sasl_port = free_port()
    extra = d / "sasl.properties"
    extra.write_text(
        f"""
listeners=PLAINTEXT://127.0.0.1:{plain.port},CONTROLLER://127.0.0.1:{plain.port + 1},SASL_SSL://127.0.0.1:{sasl_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{plain.port},SASL_SSL://127.0.0.1:{sasl_port}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location={keystore}
ssl.keystore.password={store_pass}
ssl.key.password={store_pass}
"""
    )
    env = {
        **os.environ,
        "KAFKA_EXTRA_PROPERTIES": str(extra),
        "KAFKA_FORMAT_ARGS": f"--add-scram SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
    }
    args = ["--port", str(plain.port), "--data-dir", str(plain.data_dir)]
    r = subprocess.run([str(Path(__file__).parents[2] / "deploy/kafka/broker"), "start", *args], env=env,
                       capture_output=True, text=True, timeout=180)  # fmt: skip
    if r.returncode != 0:
        log = plain.data_dir / "broker.log"
        pytest.fail(f"secure broker did not start: {r.stderr}\n{log.read_text()[-3000:] if log.exists() else ''}")
    try:
        yield SecureBroker(plain, sasl_port, ca)
    finally:
        plain.script("stop")


def secure_settings(base: Settings, b: SecureBroker, names: dict[str, str], model_dir: Path, password: str) -> Settings:
    data = settings_for(base, b.plain.bootstrap, names, model_dir).model_dump()
    data["kafka"].update(
        bootstrap_servers=b.sasl_bootstrap,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=USER,
        sasl_password=password,
        ssl_cafile=b.ca,
    )
    return Settings(**data)


def test_daemon_runs_end_to_end_over_sasl_ssl(  # type: ignore[no-untyped-def]
    secure_broker, names, small_settings, model_dir, test_file
) -> None:
    s = secure_settings(small_settings, secure_broker, names, model_dir, PASSWORD)
    lines = list(read_jsonl(test_file))[:2000]
    app = Detector(s)
    t = threading.Thread(target=app.run, kwargs={"timeout": 240}, daemon=True)
    t.start()
    try:
        wait_for(lambda: app.ready(), 120, "the daemon ready over SASL_SSL")
        produce(
            secure_broker.plain.bootstrap, names["input"], [(orjson.loads(x)["stream_id"].encode(), x) for x in lines]
        )
        wait_for(lambda: app.stats.events >= len(lines), 120, "every event scored")
    finally:
        app.stop()
        t.join(60)
    assert not t.is_alive() and app.stats.scored + app.stats.warming == len(lines)
    # Alerts and state went out over SASL_SSL; read back over the plaintext listener.
    assert len(read_all(secure_broker.plain.bootstrap, names["alerts"], expect=app.stats.alerts)) == app.stats.alerts
    assert read_all(secure_broker.plain.bootstrap, names["state"])


def test_wrong_password_fails_fast_with_a_clear_error(
    secure_broker, names, small_settings, model_dir, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import yaml

    s = secure_settings(small_settings, secure_broker, names, model_dir, "not-the-password")
    cfg = s.model_dump(mode="json")
    cfg["kafka"]["sasl_password"] = None
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "DETECTOR__KAFKA__SASL_PASSWORD": "not-the-password"}
    r = subprocess.run(
        [sys.executable, "-m", "detector.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-2000:]
    assert "authentication" in out.lower(), out[-2000:]
    assert "not-the-password" not in out
