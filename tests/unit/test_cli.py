from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detector.offline.evaluate import REPORT_KEYS


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detector.cli", *args], capture_output=True, text=True)


COMMANDS = ["check-config", "simulate", "train", "replay", "run", "score", "evaluate", "demo"]


def test_help_lists_every_subcommand() -> None:
    out = cli("--help")
    assert out.returncode == 0
    for c in COMMANDS:
        assert c in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_has_help(command: str) -> None:
    out = cli(command, "--help")
    assert out.returncode == 0 and "usage: detector " + command in out.stdout


def test_unknown_subcommand_is_a_usage_error() -> None:
    out = cli("frobnicate")
    assert out.returncode == 2


def test_score_and_evaluate_offline(model_dir, test_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    out = tmp_path / "scores.jsonl"
    r = cli("score", "--model", str(model_dir), "--data", str(test_file), "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    n_in = sum(1 for _ in test_file.open())
    assert len(lines) == n_in
    assert set(lines[0]) >= {"event_id", "stream_id", "score", "threshold", "alert", "warming"}
    alerted = [x for x in lines if x["alert"]]
    assert alerted, "the easy test file has alerts"
    for x in alerted:  # as the daemon's alert: severity and the top 3 features
        assert x["severity"] in ("warning", "critical") and len(x["top_features"]) == 3
    assert not any("top_features" in x for x in lines if not x["alert"])
    r = cli("evaluate", "--model", str(model_dir), "--data", str(test_file), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    for k in (*REPORT_KEYS, "events", "alerts"):
        assert k in rep
    assert rep["events"] == n_in and rep["alerts"] == sum(x["alert"] for x in lines)
    # Each fraud type's cost to the ranking: PR-AUC over every event not of that type.
    import numpy as np

    from detector.offline.measures import average_precision

    events = [json.loads(x) for x in test_file.open()]
    scores = np.array([0.0 if x["warming"] else x["score"] for x in lines])
    labels = np.array([e["label"] for e in events])
    assert rep["by_fraud_type"]
    for t, v in rep["by_fraud_type"].items():
        keep = np.array([e["fraud_type"] != t for e in events])
        assert v["pr_auc_without"] == pytest.approx(average_precision(scores[keep], labels[keep]), abs=1e-4)


def test_evaluate_with_the_river_baseline_side_by_side_and_plots(model_dir, test_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    plots = tmp_path / "plots"
    args = ["--json", "--baseline", "river-hst", "--plots", str(plots)]
    r = cli("evaluate", "--model", str(model_dir), "--data", str(test_file), *args)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    base = rep["baseline"]
    assert base["name"] == "river-hst" and base["events"] == rep["events"]
    assert 0.0 <= base["pr_auc"] <= 1.0 and 0.0 <= base["roc_auc"] <= 1.0
    assert sorted(rep["plots"]) == [str(plots / "pr_curve.png"), str(plots / "timelines.png")]
    for p in rep["plots"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(p).stat().st_size > 10_000


def test_demo_retrains_a_model_trained_with_other_settings(tmp_path: Path) -> None:
    import json

    from detector import __version__
    from detector.config import Settings
    from simulators.demo import _stale

    s = Settings()
    assert _stale(tmp_path, s) == "no model there yet"
    cfg = s.model.model_dump(mode="json")
    meta = {"detector_version": __version__, "training": {"model_config": {**cfg, "path": "elsewhere"}}}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    assert _stale(tmp_path, s) is None  # where it lives does not change what training makes
    old = {k: v for k, v in cfg.items() if k != "evidence_seconds"}  # a model from before the key
    (tmp_path / "metadata.json").write_text(json.dumps({**meta, "training": {"model_config": old}}))
    assert "evidence_seconds" in str(_stale(tmp_path, s))


def test_training_reports_each_batch_to_the_progress_bar(small_settings, train_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import io

    from detector.cli.main import ProgressBar
    from detector.offline.training import train_from_file

    calls: list[tuple[int, int, int, int]] = []
    train_from_file(
        small_settings, train_file, tmp_path / "m", log=lambda _m: None, epochs=2, progress=lambda *a: calls.append(a)
    )
    assert calls, "no progress reported"
    for epoch in (1, 2):
        done = [d for e, n, d, total in calls if e == epoch and n == 2]
        total = {t for e, _, _, t in calls if e == epoch}
        assert len(total) == 1 and done == list(range(1, total.pop() + 1))

    out = io.StringIO()
    bar = ProgressBar(out)
    bar(1, 8, 1, 4)
    bar(1, 8, 2, 4)  # within 0.1 s of the last drawing: skipped
    assert out.getvalue().count("\r") == 1 and "train: epoch 1/8 [#######" in out.getvalue()
    bar(1, 8, 4, 4)  # the epoch's end: the bar is erased for the epoch's log line
    assert out.getvalue().endswith("\r") and out.getvalue().rsplit("\r", 2)[1].strip() == ""
