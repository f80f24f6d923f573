"""The benchmark code runs end to end at tiny sizes (the numbers mean nothing and are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detector.offline.baselines.models import BASELINES

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_smoke_writes_json_and_markdown(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (result,) = tmp_path.glob("*-smoke.json")
    data = json.loads(result.read_text())
    assert data["scoring"]["headline"]["ratio_vs_windowed_batched"] > 0
    for client in ("kafka-python", "confluent"):
        c = data["e2e"]["clients"][client]
        assert c["detector"]["events"] == data["e2e"]["events"]
        assert [x["offered_per_s"] for x in c["latency"]] == [5000]
        # The percentiles are over the window after the lead-in; the lead-in's anomalies are apart.
        assert all(x["lead_in_s"] > 0 and x["anomalies"] == x["sent"] // 50 for x in c["latency"])
    assert [x["processes"] for x in data["e2e"]["scale_out"]] == [1, 2]
    for client in ("confluent",):  # the smoke run measures delivery on one client
        modes = data["e2e"]["delivery"][client]["median"]
        assert set(modes) == {"at_least_once", "exactly_once"} and all(m["events_per_s"] > 0 for m in modes.values())
    assert data["shadow"]["throughput"]["cost_ratio"] > 0
    assert [c["models"] for c in data["shadow"]["memory"]] == [1, 2]
    bounded = data["memory"]["cases"][-1]
    assert bounded["streams_held"] == bounded["max_streams"] < bounded["streams_seen"]
    assert bounded["evictions"] == bounded["streams_seen"] - bounded["max_streams"]
    rows = {r["data"]: r for r in data["quality"]["rows"]}
    assert set(rows) == {
        "cards, default (seed 303)",
        "cards, shifted (seed 404)",
        "metrics, 4 series x 7 days (seed 11), each trained on its first 15%",
    }
    for name, row in rows.items():  # every baseline beside the LSTM, with its paired interval
        models = row["models"]
        expected = {"lstm", "zscore"} if name.startswith("metrics") else {"lstm", "lstm, budget 2/10k", *BASELINES}
        assert set(models) == expected
        for m in expected - {"lstm", "lstm, budget 2/10k"}:
            lo, hi = models[m]["lstm_minus"][1:]
            assert lo <= hi
    md = (tmp_path / "benchmarks-smoke.md").read_text()
    for section in ("Scoring core", "End to end", "Memory per stream", "Detection quality"):
        assert section in md
    assert (tmp_path / "throughput-vs-batch-smoke.png").stat().st_size > 0
    assert (tmp_path / "latency-cdf-smoke.png").stat().st_size > 0
