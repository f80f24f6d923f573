"""The Markdown table of a benchmark run."""

from __future__ import annotations

from typing import Any

from bench.common import fmt


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"# Benchmarks ({r['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, NumPy {m['numpy']}, "
        f"OPENBLAS_NUM_THREADS={m['openblas_threads']}. Scoring figures: median of 3 repetitions after a "
        "warm-up, min and max in brackets.",
        "",
    ]
    s = r.get("scoring")
    if s:
        lines += [
            "## Scoring core (events/s, one process)",
            "",
            f"Model: F={s['features']} features, W={s['window']}, {s['units']} LSTM units.",
            "",
            "| streams / batch | ours (carried state) |",
            "|---|---|",
        ]
        for k, v in s["ours"].items():
            lines.append(f"| {k} | {fmt(v['median'])} [{fmt(v['min'])}–{fmt(v['max'])}] |")
        h = s["headline"]
        lines += [
            "",
            "| alternative | events/s | ours / it |",
            "|---|---|---|",
            f"| windowed LSTM AE re-encoding W events, batched 1024 | {fmt(s['windowed_batched_1024']['median'])} "
            f"| {h['ratio_vs_windowed_batched']:.1f}x |",
            f"| naive per-event `model.predict` (200 events, extrapolated) | {fmt(s['naive_predict']['median'])} "
            f"| {h['ratio_vs_naive_predict']:,.0f}x |",
        ]
        if "river_hst" in s:
            lines.append(
                f"| River HalfSpaceTrees score_one + learn_one | {fmt(s['river_hst']['median'])} "
                f"| {h['ratio_vs_river_hst']:.1f}x |"
            )
        lines += [
            "",
            f"Physical bound: {h['flops_per_event']:,} FLOPs per event over {h['matmul_gflops']:.1f} GFLOP/s "
            f"(float32 1024x1024 matmul, this machine) = {fmt(h['physical_bound_events_per_s'])} events/s; "
            f"ours at 10k streams, batch 1024 reaches {h['fraction_of_bound']:.1%} of it.",
            "",
        ]
    e = r.get("e2e")
    if e:
        d = e["detector"]
        lines += [
            "## End to end through a local Kafka broker (kafka-python client)",
            "",
            f"{e['events']:,} simulated events over {e['streams']:,} streams, broker on the same 2 cores.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| kafka-python produce | {fmt(e['produce_per_s'])} events/s |",
            f"| kafka-python bare consume (no processing) | {fmt(e['bare_consume_per_s'])} events/s |",
            *(
                [
                    f"| `detector replay --rate 5000` holds | {fmt(r['achieved_per_s'])} events/s "
                    f"({r['error_pct']:+.2f}%) |"
                ]
                if (r := e.get("replay_rate"))
                else []
            ),
            f"| `detector run` loop, first to last commit | {fmt(d['events_per_s'])} events/s "
            f"({d['fraction_of_bare_consume']:.0%} of bare consume; median of {d.get('reps', 1)}, "
            f"range {fmt(d.get('events_per_s_min_max', [0, 0])[0])}–{fmt(d.get('events_per_s_min_max', [0, 0])[1])}) |",
            f"| CPU seconds per million events | {d['cpu_seconds_per_million']:.0f} |",
            f"| peak RSS | {d['peak_rss_mb']:.0f} MB |",
            "",
            *(
                [
                    f"Restart with {rs['streams']:,.0f} streams: SIGTERM to exit {rs['sigterm_to_exit_s']:.1f} s; "
                    f"SIGTERM to the new process ready (model loaded, state restored) "
                    f"{rs['sigterm_to_ready_s']:.1f} s.",
                    "",
                ]
                if (rs := e.get("restart"))
                else []
            ),
            "Event-to-alert latency of live traffic in which every 50th event is blatantly anomalous, "
            "from produce to alert read:",
            "",
            "| offered events/s | p50 ms | p95 ms | p99 ms | anomalies alerted |",
            "|---|---|---|---|---|",
        ]
        for x in e["latency"]:
            f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
            lines.append(
                f"| {x['offered_per_s']:,.0f} | {f(x['p50_ms'])} | {f(x['p95_ms'])} | {f(x['p99_ms'])} "
                f"| {x['alerts_read']}/{x['anomalies']} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"
