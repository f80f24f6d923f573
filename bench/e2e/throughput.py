"""Throughput of `detector run` over a pre-filled topic, from the first batch to the last commit:
events/s, CPU seconds per million events, peak RSS; beside the client's bare consumer ceiling."""

from __future__ import annotations

import re
import resource
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.e2e.harness import daemon, daemon_settings
from detector.config import Settings


def throughput(
    base: Settings,
    bootstrap: str,
    topic: str,
    model: Path,
    n: int,
    tmp: Path,
    client: str,
    delivery: str = "at_least_once",
) -> dict[str, Any]:
    s = daemon_settings(base, bootstrap, topic, model, uuid.uuid4().hex[:6], client)
    if delivery != s.kafka.delivery:
        d = s.model_dump()
        d["kafka"]["delivery"] = delivery
        s = Settings(**d)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = daemon(s, tmp, ["--max-events", str(n)])
    peak = [0]

    def watch() -> None:  # the daemon's own high-water RSS, read from /proc while it runs
        while p.poll() is None:
            try:
                for line in open(f"/proc/{p.pid}/status"):
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = p.communicate(timeout=1800)
    watcher.join(5)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.decode(errors="replace")
    m = re.search(r"stopping after (\d+) events \((\d+) alerts\), (\d+) events/s", text)
    if p.returncode != 0 or m is None:
        raise RuntimeError(f"detector run failed ({p.returncode}):\n{text[-3000:]}")
    events, alerts, eps = (int(g) for g in m.groups())
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {
        "events": events,
        "events_per_s": float(eps),
        "cpu_seconds_per_million": cpu / events * 1e6,
        "alerts": alerts,
        "peak_rss_mb": peak[0] / 1024,
        "note": "CPU seconds include start-up (TensorFlow import, model load, group join)",
    }
