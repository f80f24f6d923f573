"""One HTTP port: /metrics (Prometheus text), /healthz (loop alive), /readyz (ready to score).

    with HealthServer(registry, state, host="127.0.0.1", port=9108) as srv:
        srv.port   # the bound port (useful with port=0)

Serves nothing else (404). Runs in a daemon thread; the loop only beats `HealthState`, whose
readiness function reads the state of the daemon's parts when asked.
"""

from __future__ import annotations

import base64
import hmac
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def _not_started() -> tuple[bool, str]:
    return False, "starting"


@dataclass
class HealthState:
    """`readiness()` gives (ready, why not), computed from the daemon's parts when asked."""

    readiness: Callable[[], tuple[bool, str]] = _not_started
    # The loop polls at least every poll_timeout (100 ms); 30 s without an iteration means stuck.
    stuck_after_seconds: float = 30.0
    last_beat: float = field(default_factory=time.monotonic)

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.last_beat < self.stuck_after_seconds


class HealthServer:
    """`basic_auth` (user, password) guards /metrics (probes stay open: orchestrators call them
    without credentials; they reveal only alive/ready); `tls` (certfile, keyfile) serves HTTPS."""

    def __init__(
        self,
        registry: CollectorRegistry,
        state: HealthState,
        host: str,
        port: int,
        basic_auth: tuple[str, str] | None = None,
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.registry, self.state = registry, state
        self.host, self.requested_port = host, port
        self.port = port
        self.basic_auth, self.tls = basic_auth, tls
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> HealthServer:
        registry, state = self.registry, self.state
        expected = None
        if self.basic_auth:
            expected = "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    given = self.headers.get("Authorization", "")
                    if expected is not None and not hmac.compare_digest(given.encode(), expected.encode()):
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="detector"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = state.alive()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"loop stuck\n")
                elif path == "/readyz":
                    ready, reason = state.readiness()
                    ok = ready and state.alive()
                    reason = reason if not ready else "the loop is stuck"
                    self._send(200 if ok else 503, b"ready\n" if ok else f"not ready: {reason}\n".encode())
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - scrapes are not log lines
                return

        self._server = ThreadingHTTPServer((self.host, self.requested_port), Handler)
        self._server.daemon_threads = True
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(*self.tls)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True).start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
