"""What the console reads from Kafka: the alerts topic into its store, and a stream's events
around an alert.

    reader = AlertsReader(client_for(console_kafka_cfg), store, alerts_topic)   # a thread
    events = recent_events(client, alert, input_topic, stream_id, before=50, scan=20_000)
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson

from detector.console.store import Store
from detector.kafka.base import Client

log = logging.getLogger("detector.console")


class AlertsReader:
    """Consumes the alerts topic with the console's own group, adds each alert to the store (once:
    idempotent on alert_id), and commits after the store has them (at-least-once)."""

    def __init__(self, client: Client, store: Store, topic: str) -> None:
        self.client, self.store, self.topic = client, store, topic
        self.added = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-alerts", daemon=True)

    def __enter__(self) -> AlertsReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.client.source(topics=[self.topic]) as src:
                    self.error = None
                    while not self._stop.is_set():
                        records = src.poll()
                        last: dict[tuple[str, int], int] = {}
                        for r in records:
                            try:
                                self.added += self.store.add_alert(orjson.loads(r.value or b""))
                            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                                log.warning(
                                    "skipped an unreadable alert at %s[%d]@%d: %s", r.topic, r.partition, r.offset, exc
                                )
                            last[(r.topic, r.partition)] = r.offset + 1
                        src.commit(last)
            except Exception as exc:  # noqa: BLE001 - Kafka away: say so on the page, retry
                self.error = str(exc)[:300]
                log.warning("alerts reader: %s; retrying in 5 s", exc)
                self._stop.wait(5.0)


def recent_events(
    client: Client, alert: dict[str, Any], input_topic: str, before: int, scan: int
) -> list[dict[str, Any]]:
    """The stream's last `before` events up to and including the alerting one, read from the
    alert's input partition among the `scan` records before its offset (newest last). Values that
    are not JSON objects are shown as text."""
    part, offset = alert.get("source_partition"), alert.get("source_offset")
    if not isinstance(part, int) or not isinstance(offset, int):
        return []
    key = str(alert["stream_id"]).encode()
    found: list[dict[str, Any]] = []
    for k, value, at in client.read_range(input_topic, part, max(offset - scan + 1, 0), offset + 1, timeout_s=15.0):
        if k != key:
            continue
        try:
            ev = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            ev = None
        found.append(
            {
                "offset": at,
                "event": ev if isinstance(ev, dict) else {"value": (value or b"").decode("utf-8", "replace")},
            }
        )
    return found[-before:]
