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
        f"OPENBLAS_NUM_THREADS={m['openblas_threads']}. Scoring figures: median of "
        f"{r.get('scoring', {}).get('reps', 3)} repetitions after a warm-up, min and max in brackets.",
        "",
    ]
    # Suites re-run on their own (`--only`) and merged into the day's file say so here.
    lines += [*(f"Note: {n}." for n in r.get("notes", [])), *([""] if r.get("notes") else [])]
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
        ]
        if "flop_ratio_windowed_over_ours" in h:  # results before 2026-12-02's fourth run lack it
            lines.append(
                f"The windowed AE does {h['windowed_flops_per_event']:,} FLOPs per event and reaches "
                f"{h['windowed_fraction_of_bound']:.1%} of the bound: at equal efficiency ours would be "
                f"{h['flop_ratio_windowed_over_ours']:.1f}x faster (the FLOP ratio)."
            )
        lines.append("")
    e = r.get("e2e")
    if e:
        lines += _e2e(e)
    if mem := r.get("memory"):
        lines += [
            "## Memory per stream (one scorer process, default model size)",
            "",
            "| streams seen | max_streams | streams held | RSS growth | bytes per held stream (RSS) "
            "| bytes per stream (arrays) | evictions |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in mem["cases"]:
            lines.append(
                f"| {c['streams_seen']:,} | {c['max_streams']:,} | {c['streams_held']:,} | {c['rss_growth_mb']:.0f} MB "
                f"| {c['rss_bytes_per_held_stream']:,.0f} | {c['array_bytes_per_stream']:,} | {c['evictions']:,} |"
            )
        lines += [
            "",
            "RSS per stream includes the stream-id index (a Python dict of str) on top of the state arrays.",
            "",
        ]
    if dl := (r.get("e2e") or {}).get("delivery"):
        lines += _delivery(dl)
    if sh := r.get("shadow"):
        lines += _shadow(sh)
    if q := r.get("quality"):
        lines += quality_table(q["rows"])
    return "\n".join(lines) + "\n"


def _delivery(dl: dict[str, Any]) -> list[str]:
    lines = [
        "## At-least-once against exactly-once (`kafka.delivery`)",
        "",
        "`detector run` over a pre-filled topic, and event-to-alert latency at "
        f"{next(iter(dl.values()))['offered_per_s']:,} events/s offered (exactly-once read by a read_committed "
        "reader); the modes alternate in one run, medians.",
        "",
        "| client | delivery | events/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for client, d in dl.items():
        for mode, m in d["median"].items():
            lat = [f"{m[k]:,.1f}" if m[k] is not None else "–" for k in ("p50_ms", "p99_ms")]
            lines.append(f"| {client} | {mode} | {fmt(m['events_per_s'])} | {lat[0]} | {lat[1]} |")
    return [*lines, ""]


def _shadow(sh: dict[str, Any]) -> list[str]:
    t = sh["throughput"]
    med = t["median_events_per_s"]
    lines = [
        "## A challenger in shadow (`model.shadow_path`)",
        "",
        f"The loop's work per batch of {t['batch']:,} events over {t['streams']:,} streams (intake, scoring, alerts,",
        "metrics; for the challenger its own scoring, would-be alerts and agreement), Kafka left out;",
        f"median of {t['reps']} alternating runs in one process.",
        "",
        "| | events/s | cost per event |",
        "|---|---|---|",
        f"| champion only | {fmt(med['champion only'])} | 1.00x |",
        f"| with a challenger | {fmt(med['with a challenger'])} | {t['cost_ratio']:.2f}x |",
        "",
        "| streams | models | RSS growth | bytes per stream |",
        "|---|---|---|---|",
    ]
    for c in sh["memory"]:
        lines.append(
            f"| {c['streams']:,} | {c['models']} | {c['rss_growth_mb']:.0f} MB | {c['rss_bytes_per_stream']:,.0f} |"
        )
    return [*lines, ""]


def _by_type(rows: list[dict[str, Any]]) -> list[str]:
    """The LSTM's incidents caught per fraud or fault type, and the PR-AUC without that type."""
    rows = [r for r in rows if r.get("by_type")]  # results before 2026-12-02's fourth run lack it
    if not rows:
        return []
    lines = [
        "By type (LSTM): incidents caught / incidents, and the PR-AUC over every other event (what the",
        "type costs the ranking).",
        "",
        "| data | type | incidents | event recall | PR-AUC without it |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        for t, v in r["by_type"].items():
            lines.append(
                f"| {r['data']} | {t} | {v['incidents_caught']}/{v['incidents']} | {v['event_recall']:.2f} "
                f"| {v['pr_auc_without']:.3f} |"
            )
    return [*lines, ""]


def _e2e(e: dict[str, Any]) -> list[str]:
    cl = e["clients"]
    names = list(cl)
    lines = [
        "## End to end through a local Kafka broker, both client backends",
        "",
        f"{e['events']:,} simulated events over {e['streams']:,} streams, broker on the same 2 cores. "
        "`detector run` is its own process; its rate is from the first batch to the last commit, alerts on, "
        "median of the repetitions with the range.",
        "",
        "| measure | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def row(label: str, f: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(f(cl[n]) for n in names) + " |")

    row("bare produce, events/s", lambda c: fmt(c["produce_per_s"]))
    row("bare consume (no processing), events/s", lambda c: fmt(c["bare_consume_per_s"]))
    row(
        "`detector run`, events/s",
        lambda c: (
            f"{fmt(c['detector']['events_per_s'])} [{fmt(c['detector']['events_per_s_min_max'][0])}–"
            f"{fmt(c['detector']['events_per_s_min_max'][1])}]"
        ),
    )
    row("`detector run` / bare consume", lambda c: f"{c['detector']['fraction_of_bare_consume']:.0%}")
    row("CPU seconds per million events", lambda c: f"{c['detector']['cpu_seconds_per_million']:.0f}")
    row("peak RSS, MB", lambda c: f"{c['detector']['peak_rss_mb']:.0f}")
    for i, x in enumerate(cl[names[0]]["latency"]):

        def lat(c: dict[str, Any], i: int = i) -> str:
            y = c["latency"][i]
            f = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
            spread = y.get("p99_ms_min_max")
            rng = f"; p99 of {y['reps']} runs {f(spread[0])}–{f(spread[1])}" if spread else ""
            cold = f"; first {y['lead_in_s']:.0f} s: p99 {f(y['cold_start_p99_ms'])}" if "lead_in_s" in y else ""
            return (
                f"{f(y['p50_ms'])} / {f(y['p95_ms'])} / {f(y['p99_ms'])} "
                f"({y['alerts_read']}/{y['anomalies']}{rng}{cold})"
            )

        row(f"event-to-alert p50 / p95 / p99 ms at {x['offered_per_s']:,.0f} events/s offered", lat)
    lines += [
        "",
        "Latency: live traffic (simulated events, their own spacing, shifted to end now) in which every 50th "
        "event is blatantly anomalous, from produce to the alert read back; the median of 3 runs by p99; in "
        "brackets, anomalies alerted of those sent and the p99 range over the runs. Each run starts a fresh "
        "daemon on fresh topics and offers the load for a lead-in first (its first checkpoint, every stream "
        "new, falls in it); the percentiles are the 10 s after it, and the lead-in's own p99 is given as the "
        "first seconds' (the median run's).",
        "",
    ]
    if r := e.get("replay_rate"):
        lines += [
            f"`detector replay --rate 5000` holds {fmt(r['achieved_per_s'])} events/s ({r['error_pct']:+.2f}%).",
            "",
        ]
    if rs := e.get("restart"):
        lines += [
            f"Restart with {rs['streams']:,.0f} streams (`{rs.get('client', 'kafka-python')}`): SIGTERM to exit "
            f"{rs['sigterm_to_exit_s']:.1f} s; SIGTERM to the new process ready (model loaded, state restored) "
            f"{rs['sigterm_to_ready_s']:.1f} s.",
            "",
        ]
    if so := e.get("scale_out"):
        one, two = so
        lines += [
            f"Scale-out, one consumer group on an {one['partitions']}-partition topic ({one['events']:,} events, "
            f"`{e['restart'].get('client', '')}`): 1 process {fmt(one['events_per_s'])} events/s, 2 processes "
            f"{fmt(two['events_per_s'])} events/s ({fmt(e['scale_out_ratio'])}x). This machine has 2 cores and "
            "the broker runs on them too, so a second process mostly competes for the same CPU.",
            "",
        ]
    return lines


def quality_table(rows: list[dict[str, Any]]) -> list[str]:
    """Per data set: the LSTM beside every baseline, same training data and target rate, with the
    paired bootstrap interval of the PR-AUC difference over streams (a tie when it straddles 0)."""
    lines = [
        "## Detection quality (held-out simulated data; `python -m bench --only quality`)",
        "",
        "Cards: one model trained on the default scenario (2,000 cards, seed 101), tested on other seeds of "
        "it and on config/scenarios/shifted.yaml (other countries, amounts x20, busier cards, honest ATM use, "
        "three fraud kinds the training world lacks). Every baseline is fitted on the same normal training "
        "events over the same causal per-card aggregate features and thresholded at the same target rate on "
        "held-out training cards. Metrics: each series trained on its own first 15%, scored causally.",
        "",
        "| data | detector | PR-AUC | incident recall | false alerts / 10k | PR-AUC LSTM - it (95% CI over streams) |",
        "|---|---|---|---|---|---|",
    ]
    f = lambda v: "-" if v is None or v != v else f"{v:.3f}"  # noqa: E731
    for row in rows:
        for name, m in row["models"].items():
            d = m.get("lstm_minus")
            if d:
                verdict = "tie" if d[1] <= 0 <= d[2] else ("LSTM better" if d[0] > 0 else "baseline better")
                diff = f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] {verdict}"
            else:
                diff = ""
            lines.append(
                f"| {row['data']} | {name} | {f(m['pr_auc'])} | {f(m['incident_recall'])} "
                f"| {m['false_alerts_per_10k']:.2f} | {diff} |"
            )
    return [*lines, "", *_by_type(rows)]
