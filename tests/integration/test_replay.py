"""`detector replay` into the real broker: complete, keyed, in per-stream order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from detector.jsonl import write_jsonl
from simulators.cards import simulate_cards
from simulators.output import card_records
from simulators.scenario import Scenario
from tests.integration.kafka_io import read_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_replay_100k_events_reads_back_complete_and_in_stream_order(broker, names, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "events.jsonl.gz"
    n = write_jsonl(card_records(simulate_cards(1200, 30, Scenario(), seed=21)), str(path))
    assert n >= 100_000
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "detector.cli",
            "replay",
            str(path),
            "--topic",
            names["input"],
            "--bootstrap-servers",
            broker.bootstrap,
            "--as-fast-as-possible",
        ],
        env={**os.environ, "DETECTOR__KAFKA__CLIENT": names["client"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"sent {n}  acked {n}  failed 0" in r.stderr
    got = read_all(broker.bootstrap, names["input"], expect=n, timeout=120)
    assert len(got) == n
    per_stream: dict[str, list[str]] = {}
    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        ev = orjson.loads(m.value)
        assert m.key.decode() == ev["stream_id"]
        per_stream.setdefault(ev["stream_id"], []).append(ev["event_id"])
    # Event ids are assigned in time order, so each stream's ids must come back ascending.
    assert all(ids == sorted(ids) for ids in per_stream.values())
    assert sum(len(v) for v in per_stream.values()) == n
