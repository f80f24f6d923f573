"""Held-out data for training: which streams (or which later part of each stream) stop training
early and calibrate the threshold.

    split = split_data(ds, frac=0.2, seed=7, min_streams=3)     # by whole streams, or in time
    events, counted = held_out_events(ds, split.cal)            # run these; score the counted ones
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.offline.dataset import Dataset


@dataclass(frozen=True)
class Split:
    """Row indices of the training, early-stopping and calibration data. Held-out parts are
    (rows to run through the model, first row that counts): whole held-out streams count from 0;
    a time split runs a stream from its start and counts only its later part."""

    train: list[np.ndarray]
    val: list[tuple[np.ndarray, int]]
    cal: list[tuple[np.ndarray, int]]
    kind: str  # "streams" or "time"


def split_data(ds: Dataset, frac: float, seed: int, min_streams: int) -> Split:
    """Whole streams held out (seeded) when there are at least `min_streams`; otherwise each
    stream split in time: its first 1 - frac for training, then half of the rest for early
    stopping and the last half for calibration."""
    streams = list(ds.streams().values())
    if len(streams) >= min_streams:
        perm = np.random.default_rng(seed).permutation(len(streams))
        n_hold = max(2, int(len(streams) * frac))
        hold = [streams[i] for i in perm[:n_hold]]
        train = [streams[i] for i in perm[n_hold:]]
        return Split(train, [(r, 0) for r in hold[: n_hold // 2]], [(r, 0) for r in hold[n_hold // 2 :]], "streams")
    train, val, cal = [], [], []
    for rows in streams:
        a = int(len(rows) * (1.0 - frac))
        b = a + (len(rows) - a) // 2
        train.append(rows[:a])
        val.append((rows[:b], a))
        cal.append((rows, b))
    return Split(train, val, cal, "time")


def held_out_groups(
    z: np.ndarray, parts: list[tuple[np.ndarray, int]], batch: int
) -> tuple[list[list[np.ndarray]], list[list[int]]]:
    """Early-stopping batches (by similar length) and each sequence's first counted row."""
    order = sorted(range(len(parts)), key=lambda i: len(parts[i][0]))
    groups, starts = [], []
    for k in range(0, len(order), batch):
        idx = order[k : k + batch]
        groups.append([z[parts[i][0]] for i in idx])
        starts.append([parts[i][1] for i in idx])
    return groups, starts


def held_out_events(ds: Dataset, parts: list[tuple[np.ndarray, int]]) -> tuple[list[Any], np.ndarray]:
    """The events to run for held-out parts, in time order, and which of them count."""
    rows = np.concatenate([r for r, _ in parts])
    counts = np.concatenate([np.arange(len(r)) >= k for r, k in parts])
    ts = np.array([ds.events[i].ts for i in rows])
    order = np.lexsort((rows, ts))
    return [ds.events[i] for i in rows[order]], counts[order]
