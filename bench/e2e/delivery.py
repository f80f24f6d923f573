"""At-least-once against exactly-once (`kafka.delivery`), same run, same broker, same model:
`detector run` throughput over a pre-filled topic, and event-to-alert latency at 5,000 events/s
offered (the exactly-once reader is read_committed: it sees an alert when its transaction
commits). The two modes alternate, so the machine's drift falls on both alike."""

from __future__ import annotations

import statistics
import uuid
from pathlib import Path
from typing import Any

from bench.e2e.harness import produce
from bench.e2e.latency import latency
from bench.e2e.throughput import throughput
from detector.config import Settings

MODES = ("at_least_once", "exactly_once")
RATE = 5000


def delivery(
    base: Settings, bootstrap: str, model: Path, lines: list[bytes], tmp: Path, client: str, smoke: bool
) -> dict[str, Any]:
    n = len(lines) if smoke else min(len(lines), 200_000)
    topic = f"dlv-{client}-{uuid.uuid4().hex[:6]}"
    produce(bootstrap, topic, lines[:n], client)
    reps = 1 if smoke else 2
    runs: dict[str, dict[str, list[Any]]] = {m: {"events_per_s": [], "p50_ms": [], "p99_ms": []} for m in MODES}
    for _ in range(reps):
        for mode in MODES:
            t = throughput(base, bootstrap, topic, model, n, tmp, client, delivery=mode)
            lat = latency(base, bootstrap, model, lines, RATE, 1.5 if smoke else 10, tmp, client,
                          lead_s=1.0 if smoke else None, delivery=mode)  # fmt: skip
            r = runs[mode]
            r["events_per_s"].append(t["events_per_s"])
            r["p50_ms"].append(lat["p50_ms"])
            r["p99_ms"].append(lat["p99_ms"])
            print(
                f"  {client} {mode}: {t['events_per_s']:,.0f} ev/s; at {RATE:,} ev/s offered p50 {lat['p50_ms']} ms, "
                f"p99 {lat['p99_ms']} ms ({lat['alerts_read']}/{lat['anomalies']} anomalies alerted)",
                flush=True,
            )
    out: dict[str, Any] = {"events": n, "offered_per_s": RATE, "reps": reps, "runs": runs, "median": {}}
    for mode, r in runs.items():
        out["median"][mode] = {
            k: (statistics.median(v) if all(x is not None for x in v) else None) for k, v in r.items()
        }
    return out


def _median(values: list[Any]) -> float | None:
    """None when a run had no figure (no alert read in time)."""
    return None if any(v is None for v in values) else statistics.median(values)
