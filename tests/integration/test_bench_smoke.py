"""The benchmark code runs end to end at tiny sizes (the numbers mean nothing and are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_smoke_writes_json_and_markdown(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (result,) = tmp_path.glob("*-smoke.json")
    data = json.loads(result.read_text())
    assert data["scoring"]["headline"]["ratio_vs_windowed_batched"] > 0
    assert data["e2e"]["detector"]["events"] == data["e2e"]["events"]
    assert [x["offered_per_s"] for x in data["e2e"]["latency"]] == [1000, 5000]
    md = (tmp_path / "benchmarks-smoke.md").read_text()
    assert "Scoring core" in md and "End to end" in md
