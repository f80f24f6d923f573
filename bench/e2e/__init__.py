"""End to end through a real local broker (started here, stopped here, 127.0.0.1 only), one
benchmark per module, every one for both clients in one run on one broker:

* `throughput`: `detector run` over a pre-filled topic, beside the client's bare consumer;
* `latency`: event-to-alert latency at fixed offered rates of live traffic, three runs per rate,
  the median one by p99 reported;
* `replay_rate`: the rate `detector replay --rate` holds;
* `restart`: SIGTERM to exit and to the next process ready, with many streams to restore;
* `scale_out`: one and two daemons in one group;
* `delivery`: at-least-once against exactly-once, throughput and latency at 5,000 events/s.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.e2e.delivery import delivery
from bench.e2e.harness import LocalBroker, bare_consume, card_lines, produce, train_model
from bench.e2e.latency import latency
from bench.e2e.replay_rate import replay_rate
from bench.e2e.restart import restart
from bench.e2e.scale_out import scale_out
from bench.e2e.throughput import throughput
from detector.config import Settings


def run(smoke: bool = False) -> dict[str, Any]:
    """Every measure for both clients, in one run, on one broker."""
    base = Settings()
    n = 5_000 if smoke else 1_000_000
    out: dict[str, Any] = {"events": n, "streams": 10_000 if not smoke else 300, "clients": {}}
    with tempfile.TemporaryDirectory() as tmpd, LocalBroker() as broker:
        tmp = Path(tmpd)
        model = train_model(base, tmp, smoke)
        lines = card_lines(n, out["streams"], 8)
        lat_lines = card_lines(12_500, out["streams"], 8) if smoke else lines
        for client in ("kafka-python", "confluent"):
            c: dict[str, Any] = {}
            out["clients"][client] = c
            topic = f"e2e-{client}-{uuid.uuid4().hex[:6]}"
            t0 = time.perf_counter()
            produce(broker.bootstrap, topic, lines, client)
            c["produce_per_s"] = n / (time.perf_counter() - t0)
            c["bare_consume_per_s"] = bare_consume(broker.bootstrap, topic, n, client)
            print(
                f"  {client}: produce {c['produce_per_s']:,.0f} ev/s; bare consume {c['bare_consume_per_s']:,.0f} ev/s",
                flush=True,
            )
            runs = [throughput(base, broker.bootstrap, topic, model, n, tmp, client) for _ in range(1 if smoke else 3)]
            runs.sort(key=lambda r: r["events_per_s"])
            c["detector"] = d = dict(runs[len(runs) // 2])  # the median run, with the spread beside it
            d["events_per_s_min_max"] = [runs[0]["events_per_s"], runs[-1]["events_per_s"]]
            d["reps"] = len(runs)
            d["fraction_of_bare_consume"] = d["events_per_s"] / c["bare_consume_per_s"]
            print(
                f"  {client}: detector run {d['events_per_s']:,.0f} ev/s "
                f"({d['fraction_of_bare_consume']:.0%} of bare consume), "
                f"{d['cpu_seconds_per_million']:.0f} CPU s per million events, peak RSS {d['peak_rss_mb']:.0f} MB",
                flush=True,
            )
            c["latency"] = []
            for r in (5000,) if smoke else (1000, 5000, 20000):
                if smoke:  # 1.5 s measured after a 1 s lead-in
                    reps = [latency(base, broker.bootstrap, model, lat_lines, r, 1.5, tmp, client, lead_s=1.0)]
                else:
                    reps = [latency(base, broker.bootstrap, model, lines, r, 10, tmp, client) for _ in range(3)]
                reps.sort(key=lambda x: x["p99_ms"] if x["p99_ms"] is not None else float("inf"))
                lat = dict(reps[len(reps) // 2])  # the run with the median p99, the spread beside it
                lat["reps"] = len(reps)
                lat["p99_ms_min_max"] = [reps[0]["p99_ms"], reps[-1]["p99_ms"]]
                lat["p50_ms_all"] = [x["p50_ms"] for x in reps]
                c["latency"].append(lat)
                print(
                    f"  {client}: latency at {r:>6,} ev/s offered: p50 {lat['p50_ms']}, p95 {lat['p95_ms']}, "
                    f"p99 {lat['p99_ms']} ms (median of {lat['reps']} runs by p99, range {lat['p99_ms_min_max']}; "
                    f"first {lat['lead_in_s']:.0f} s of a fresh daemon: p99 {lat['cold_start_p99_ms']} ms; "
                    f"{lat['alerts_read']}/{lat['anomalies']} anomalies alerted, {lat['alerts_total']} alerts)",
                    flush=True,
                )
        # After the throughput runs: on a cold broker (its JIT compiling on the 2 cores) the replay
        # measured 4,354 of 5,000 events/s once; on a warm one -0.03 to -0.06% in three runs.
        out["replay_rate"] = replay_rate(broker.bootstrap, tmp, lines[: 2_000 if smoke else 25_000], 5000.0)
        print(
            f"  detector replay --rate 5000: {out['replay_rate']['achieved_per_s']:,.0f} ev/s "
            f"({out['replay_rate']['error_pct']:+.2f}%)",
            flush=True,
        )
        fast = "confluent"
        out["restart"] = restart(base, broker.bootstrap, model, tmp, 2_000 if smoke else 100_000, fast)
        out["restart"]["client"] = fast
        rs = out["restart"]
        print(
            f"  restart with {rs['streams']:,.0f} streams: SIGTERM to exit {rs['sigterm_to_exit_s']:.1f} s, "
            f"to the new process ready {rs['sigterm_to_ready_s']:.1f} s ({rs['restored']:,.0f} restored)",
            flush=True,
        )
        scale = lines[: 5_000 if smoke else 600_000]
        out["scale_out"] = [scale_out(base, broker.bootstrap, model, scale, k, tmp, fast) for k in (1, 2)]
        one, two = (x["events_per_s"] for x in out["scale_out"])
        out["scale_out_ratio"] = two / one if one and two else None
        print(
            f"  scale-out ({fast}, 8 partitions): 1 process {one or 0:,.0f} ev/s, 2 processes {two or 0:,.0f} ev/s "
            f"({out['scale_out_ratio'] or 0:.2f}x; 2 cores shared with the broker; 0: too few events to time)",
            flush=True,
        )
        out["delivery"] = {  # smoke: one client (the bench code is the same for both)
            client: delivery(base, broker.bootstrap, model, lat_lines, tmp, client, smoke)
            for client in ((fast,) if smoke else ("kafka-python", "confluent"))
        }
    return out
