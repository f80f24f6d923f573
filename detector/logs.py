"""Logging set-up: text for people, JSON lines for log pipelines (runtime.log_format)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # kafka-python logs every reconnect attempt while a broker is away (~5 lines a second).
    handler.addFilter(ClientLogLimit(prefix="kafka", every=10.0))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python is chatty at INFO


_DIGITS = re.compile(r"\d+")


class ClientLogLimit(logging.Filter):
    """At most one line per `every` seconds per (logger, message with its numbers blanked) for
    loggers under `prefix`; the next line that passes says how many were held back."""

    def __init__(self, prefix: str, every: float, clock: object = time.monotonic) -> None:
        super().__init__()
        self.prefix, self.every, self.clock = prefix, every, clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == self.prefix or record.name.startswith(self.prefix + ".")):
            return True
        # The message with its numbers blanked: reconnect lines differ only in ports and backoffs,
        # while a different error (an authentication failure) is a different key and passes.
        key = (record.name, _DIGITS.sub("#", record.getMessage())[:300])
        now = self.clock()  # type: ignore[operator]
        last, held = self._seen.get(key, (-1e18, 0))
        if now - last < self.every:
            self._seen[key] = (last, held + 1)
            return False
        if len(self._seen) > 1000:  # numbers blanked: few distinct keys in practice; cleared if not
            self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} similar lines held back in the last {self.every:.0f}s)"
        return True


class RateLimited:
    """At most one log line per `every` seconds for a repeated per-event problem, with a count.

    dlq_log = RateLimited(log, every=10.0)
    dlq_log.warning("dead-lettered %d events, last: %s", reason)
    """

    def __init__(self, logger: logging.Logger, every: float) -> None:
        self.logger, self.every = logger, every
        self.count = 0
        self.last = 0.0

    def warning(self, msg: str, *args: object) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            self.logger.warning(msg, self.count, *args)
            self.count, self.last = 0, now
