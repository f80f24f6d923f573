"""PNG plots of a benchmark run: scoring throughput vs batch size, event-to-alert latency CDF."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write(results: dict[str, Any], out: Path, suffix: str = "") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    s = results.get("scoring")
    if s:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        by_streams: dict[int, list[tuple[int, float]]] = {}
        for key, v in s["ours"].items():
            streams, batch = (int(x) for x in key.split("/"))
            by_streams.setdefault(streams, []).append((batch, v["median"]))
        for streams, pts in sorted(by_streams.items()):
            pts.sort()
            ax.plot([b for b, _ in pts], [r for _, r in pts], marker="o", label=f"ours, {streams:,} streams")
        ax.axhline(s["windowed_batched_1024"]["median"], ls="--", c="gray", label="windowed AE, batch 1024")
        if "river_hst" in s:
            ax.axhline(s["river_hst"]["median"], ls=":", c="gray", label="River HST")
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="events/s", title="Scoring core throughput")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        made.append(out / f"throughput-vs-batch{suffix}.png")
        fig.savefig(made[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    e = results.get("e2e")
    if e:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for client, c in e["clients"].items():
            for lat in c["latency"]:
                cdf = lat.get("cdf_ms") or []
                if cdf:
                    ax.plot(cdf, range(len(cdf)), label=f"{client}, {lat['offered_per_s']:,.0f} ev/s")
        ax.set(xscale="log", xlabel="event-to-alert latency, ms", ylabel="percentile", title="Latency CDF")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        made.append(out / f"latency-cdf{suffix}.png")
        fig.savefig(made[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    return made
