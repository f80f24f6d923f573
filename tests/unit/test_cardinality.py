"""A cardinality attack: a burst of 1 million distinct stream ids against a table bounded at
20,000 streams. Memory stays bounded, evictions are counted, and streams that keep sending
(the legitimate ones) keep their state and keep scoring."""

from __future__ import annotations

import numpy as np
import pytest

from bench.scoring import random_embeddings, random_weights
from detector.config import FeaturesConfig
from detector.core.features import FeatureSpec, ParsedEvent
from detector.core.scorer import lstm_scorer
from detector.core.scoring import Normalizer

pytestmark = pytest.mark.slow
ATTACK, BOUND, BATCH, LEGIT = 1_000_000, 20_000, 2_000, 20


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def event(stream: str, i: int) -> ParsedEvent:
    return ParsedEvent(stream, f"e{i}", 1.8e9 + i * 0.01, (3.0,), (0, 1, 2), {}, (5, 6, 7))


def test_a_million_new_ids_cannot_grow_memory_past_the_bound() -> None:
    spec = random_embeddings(FeatureSpec(FeaturesConfig()), 5)
    f, u, w = spec.n_features, 32, 16
    norm = Normalizer(np.zeros(f, np.float32), np.ones(f, np.float32))
    scorer = lstm_scorer(random_weights(f, u, w, 1), norm, spec, w, 3, BOUND, 0.5)
    table = scorer.table
    legit = [f"card-{k}" for k in range(LEGIT)]
    # Fill the table to its bound first: the baseline is a full table, as in production.
    for k in range(0, BOUND, BATCH):
        scorer.score_many([event(f"warm-{k + j}", j) for j in range(BATCH)], now=0.0)
    base = rss_mb()
    legit_warming = []
    for k in range(0, ATTACK, BATCH - LEGIT):
        batch = [event(f"attack-{k + j:07d}", k + j) for j in range(BATCH - LEGIT)]
        batch += [event(s, k) for s in legit]
        scores = scorer.score_many(batch, now=float(k))
        legit_warming.append(bool(scores.warming[-LEGIT:].any()))
        assert np.isfinite(scores.score).all()
    grown = rss_mb() - base
    assert len(table) <= BOUND
    assert table.evictions >= ATTACK - BOUND
    # A bounded table of 20k streams is ~37 MB of arrays; an unbounded one for 1M would be ~2 GB.
    assert grown < 150, f"RSS grew {grown:.0f} MB"
    # The legitimate streams were seen in every batch: never evicted, out of warm-up after 3 events.
    assert all(s in table.index for s in legit)
    assert not any(legit_warming[3:])
    assert int(table.count[table.index["card-0"]]) == len(legit_warming)
