"""The Markdown table of a benchmark run."""

from __future__ import annotations

from typing import Any

from bench.common import fmt


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"# Benchmarks ({r['date']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, NumPy {m['numpy']}, "
             f"OPENBLAS_NUM_THREADS={m['openblas_threads']}. Median of {r.get('scoring', {}).get('ours', {}) and 3} "
             "repetitions after a warm-up; min and max in brackets.", ""]
    s = r.get("scoring")
    if s:
        lines += ["## Scoring core (events/s, one process)", "",
                  f"Model: F={s['features']} features, W={s['window']}, {s['units']} LSTM units.", "",
                  "| streams / batch | ours (carried state) |", "|---|---|"]
        for k, v in s["ours"].items():
            lines.append(f"| {k} | {fmt(v['median'])} [{fmt(v['min'])}–{fmt(v['max'])}] |")
        h = s["headline"]
        lines += ["", "| alternative | events/s | ours / it |", "|---|---|---|",
                  f"| windowed LSTM AE re-encoding W events, batched 1024 | {fmt(s['windowed_batched_1024']['median'])} "
                  f"| {h['ratio_vs_windowed_batched']:.1f}x |",
                  f"| naive per-event `model.predict` (200 events, extrapolated) | {fmt(s['naive_predict']['median'])} "
                  f"| {h['ratio_vs_naive_predict']:,.0f}x |"]
        if "river_hst" in s:
            lines.append(f"| River HalfSpaceTrees score_one + learn_one | {fmt(s['river_hst']['median'])} "
                         f"| {h['ratio_vs_river_hst']:.1f}x |")
        lines += ["", f"Physical bound: {h['flops_per_event']:,} FLOPs per event over {h['matmul_gflops']:.1f} GFLOP/s "
                  f"(float32 1024x1024 matmul, this machine) = {fmt(h['physical_bound_events_per_s'])} events/s; "
                  f"ours at 10k streams, batch 1024 reaches {h['fraction_of_bound']:.1%} of it.", ""]
    return "\n".join(lines) + "\n"
