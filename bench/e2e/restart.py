"""Restart: SIGTERM a daemon holding many streams, start a new one, time until it is ready."""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path

import orjson

from bench.e2e.harness import daemon, daemon_settings, free_port, produce, wait_ready
from detector.config import Settings


def restart(base: Settings, bootstrap: str, model: Path, tmp: Path, streams: int, client: str) -> dict[str, float]:
    """SIGTERM a daemon holding `streams` streams, start a new one: time until it is ready again.

    Ready means the new process has loaded the model, joined the group and restored every
    stream of its partitions from the changelog (that is when /readyz turns 200).
    """
    tag = uuid.uuid4().hex[:6]
    topic = f"restart-{tag}"
    # One event per stream, so the changelog holds `streams` states.
    produce(
        bootstrap,
        topic,
        [
            orjson.dumps(
                {
                    "event_id": f"r{i}",
                    "stream_id": f"s{i}",
                    "ts": time.time(),
                    "amount": 10.0,
                    "channel": "pos",
                    "country": "US",
                    "merchant_category": "grocery",
                }
            )
            for i in range(streams)
        ],
        client,
    )
    d = daemon_settings(base, bootstrap, topic, model, tag, client).model_dump()
    d["state"]["max_streams"] = max(streams, d["kafka"]["max_poll_records"])
    port = free_port()
    d["http"]["port"] = port
    s = Settings(**d)
    first = daemon(s, tmp, ["--max-events", str(streams)])
    first.communicate(timeout=600)  # processes every event, checkpoints, exits 0
    old = daemon(s, tmp, [])
    wait_ready(old, port)
    t0 = time.monotonic()
    old.send_signal(signal.SIGTERM)
    old.communicate(timeout=60)
    stopped = time.monotonic() - t0
    new = daemon(s, tmp, [])
    wait_ready(new, port)
    ready = time.monotonic() - t0
    new.send_signal(signal.SIGTERM)
    out, _ = new.communicate(timeout=60)
    found = [int(x) for x in re.findall(r"restored (\d+) streams", out.decode(errors="replace"))]
    return {
        "streams": float(streams),
        "sigterm_to_exit_s": stopped,
        "sigterm_to_ready_s": ready,
        "restored": float(max(found, default=-1)),
    }
