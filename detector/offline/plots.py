"""Evaluation plots (`detector evaluate --plots DIR`): the precision-recall curve, and score
timelines of a few streams with their alerts and true incidents marked.

    ev = Events(labels, incidents, streams, ts)            # per-event arrays, in file order
    paths = write_plots(Path("plots"), ev, [Run("LSTM", scores, alerts, threshold)])
    # [pr_curve.png, timelines.png]; a second Run (a baseline) is drawn beside the first

Deterministic: no timestamps in the PNG metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TIMELINES = 6  # streams drawn: those of the first incidents, and the one with the most false alerts


@dataclass(frozen=True)
class Run:
    name: str
    scores: np.ndarray
    alerts: np.ndarray
    threshold: float


@dataclass(frozen=True)
class Events:
    labels: np.ndarray
    incidents: list[Any]
    streams: list[str]
    ts: np.ndarray


def pr_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at every distinct score taken as the threshold (highest first)."""
    order = np.argsort(-scores, kind="mergesort")
    y = labels[order] == 1
    tp = np.cumsum(y)
    k = np.arange(1, len(y) + 1)
    last_of_tie = np.r_[np.diff(scores[order]) != 0, True]
    return (tp / max(int(y.sum()), 1))[last_of_tie], (tp / k)[last_of_tie]


def pick_streams(ev: Events, alerts: np.ndarray, n: int = TIMELINES) -> list[str]:
    """Streams of the first incidents (file order), then the stream with the most false alerts."""
    chosen: list[str] = []
    for inc, sid in zip(ev.incidents, ev.streams, strict=True):
        if inc is not None and sid not in chosen:
            chosen.append(sid)
        if len(chosen) >= n - 1:
            break
    false = [sid for sid, a, lab in zip(ev.streams, alerts, ev.labels, strict=True) if a and lab == 0]
    if false:
        worst = max(sorted(set(false)), key=false.count)
        if worst not in chosen:
            chosen.append(worst)
    return chosen[:n]


def write_plots(out: Path, ev: Events, runs: list[Run]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "pr_curve.png", out / "timelines.png"]

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in runs:
        recall, precision = pr_points(r.scores, ev.labels)
        ax.step(recall, precision, where="post", label=r.name)
        tp = int((r.alerts & (ev.labels == 1)).sum())
        n_alerts = int(r.alerts.sum())
        at_recall = tp / max(int((ev.labels == 1).sum()), 1)
        ax.plot([at_recall], [tp / n_alerts if n_alerts else 1.0], "o", color=ax.lines[-1].get_color())
    ax.set_xlabel("recall (events)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall (dot: at the alert threshold)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100, metadata={"Software": None})
    plt.close(fig)

    main = runs[0]
    streams = pick_streams(ev, main.alerts)
    fig, axes = plt.subplots(len(streams) or 1, 1, figsize=(9, 1.9 * max(len(streams), 1)), squeeze=False)
    sid_arr = np.array(ev.streams)
    for ax, sid in zip(axes[:, 0], streams, strict=False):
        idx = np.flatnonzero(sid_arr == sid)
        hours = (ev.ts[idx] - ev.ts[idx[0]]) / 3600
        fraud = ev.labels[idx] == 1
        for inc in sorted({ev.incidents[i] for i in idx if ev.incidents[i] is not None}, key=str):
            span = hours[[ev.incidents[i] == inc for i in idx]]
            ax.axvspan(span.min() - 0.05, span.max() + 0.05, color="tab:orange", alpha=0.25, lw=0)
        ax.plot(hours, main.scores[idx], ".-", lw=0.6, ms=3, color="tab:blue")
        ax.plot(hours[fraud], main.scores[idx][fraud], "o", ms=4, mfc="none", color="tab:orange")
        hit = main.alerts[idx]
        ax.plot(hours[hit], main.scores[idx][hit], "x", ms=7, color="tab:red")
        ax.axhline(main.threshold, ls="--", lw=0.8, color="tab:red")
        ax.set_yscale("symlog", linthresh=max(main.threshold / 10, 1e-6))
        ax.set_ylabel("score")
        ax.set_title(f"{sid}: {int(hit.sum())} alerts, {int(fraud.sum())} fraud events", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("hours since the stream's first event (shaded: incident, x: alert, dashed: threshold)")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100, metadata={"Software": None})
    plt.close(fig)
    return paths
