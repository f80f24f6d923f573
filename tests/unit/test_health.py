"""The HTTP port: probes, basic auth on /metrics, and HTTPS."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from detector.config import ConfigError, load_config
from detector.service.health import HealthServer, HealthState
from detector.service.metrics import Metrics


def get(url: str, auth: tuple[str, str] | None = None, context: ssl.SSLContext | None = None) -> int:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        return urllib.request.urlopen(req, timeout=5, context=context).status  # type: ignore[no-any-return]
    except urllib.error.HTTPError as e:
        return e.code


def server(**kw: object) -> HealthServer:
    r = CollectorRegistry()
    Metrics.create(r)
    state = HealthState()
    state.beat()
    return HealthServer(r, state, "127.0.0.1", 0, **kw)  # type: ignore[arg-type]


def test_basic_auth_guards_metrics_and_leaves_the_probes_open() -> None:
    with server(basic_auth=("prom", "s3cret")) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        assert get(f"{base}/metrics") == 401
        assert get(f"{base}/metrics", ("prom", "wrong")) == 401
        assert get(f"{base}/metrics", ("prom", "s3cret")) == 200
        assert get(f"{base}/healthz") == 200 and get(f"{base}/readyz") == 503


def test_https_when_a_certificate_is_configured(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the test certificate"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    with server(tls=(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))) as srv:
        ctx = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
        assert get(f"https://127.0.0.1:{srv.port}/metrics", context=ctx) == 200
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=5)


@pytest.mark.parametrize(
    "http",
    [{"basic_auth_username": "u"}, {"basic_auth_password": "p"}, {"tls_certfile": "c.pem"}],
)
def test_auth_and_tls_settings_come_in_pairs(tmp_path: Path, http: dict[str, str]) -> None:
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"http": http}))
    with pytest.raises(ConfigError, match=r"^config error: http: .*go together"):
        load_config(p)


def test_client_log_lines_are_rate_limited_per_template() -> None:
    import logging

    from detector.logs import ClientLogLimit

    now = [0.0]
    f = ClientLogLimit(prefix="kafka", every=10.0, clock=lambda: now[0])

    def line(name: str, msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)

    passed = []
    for i in range(50):  # 50 reconnect errors in 10 s (one per 0.2 s), ports and backoffs differing
        now[0] = i * 0.2
        r = line("kafka.conn", "%s: connect to 127.0.0.1:%d failed (backoff %.2f s)", "<conn>", 40000 + i, i / 7)
        if f.filter(r):
            passed.append(r.getMessage())
    assert passed == ["<conn>: connect to 127.0.0.1:40000 failed (backoff 0.00 s)"]
    # A different error with the same template passes: it is a different message.
    assert f.filter(line("kafka.conn", "%s: connect to 127.0.0.1:%d failed (backoff %.2f s)", "<auth>", 1, 0.0))
    assert f.filter(line("kafka.conn", "%s: %s", "<conn>", "SASL authentication failed"))
    assert f.filter(line("detector", "%s: connect to 127.0.0.1:%d failed (backoff %.2f s)", "<conn>", 1, 0.0))
    now[0] = 10.0
    r = line("kafka.conn", "%s: connect to 127.0.0.1:%d failed (backoff %.2f s)", "<conn>", 41000, 3.0)
    assert f.filter(r) and "(49 similar lines held back" in r.getMessage()
