"""Bad input to the offline commands: one line on stderr naming the file, argument or key, exit 2,
and nothing written (no traceback, no half-trained model)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from detector.cli.main import main
from detector.exceptions import DataError
from detector.jsonl import read_jsonl


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    try:
        rc = main(list(args))
    except SystemExit as exc:  # argparse usage errors
        rc = int(exc.code or 0)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


@pytest.mark.parametrize(
    ("args", "argument", "why"),
    [
        (["simulate", "--streams", "0", "--out", "x.jsonl"], "--streams", "positive integer"),
        (["simulate", "--days", "-2", "--out", "x.jsonl"], "--days", "positive integer"),
        (["simulate", "--seed", "-1", "--out", "x.jsonl"], "--seed", "non-negative integer"),
        (["simulate", "--streams", "many", "--out", "x.jsonl"], "--streams", "positive integer"),
        (["train", "--data", "x.jsonl", "--epochs", "0"], "--epochs", "positive integer"),
        (["replay", "x.jsonl", "--rate", "0"], "--rate", "positive number"),
        (["replay", "x.jsonl", "--speed", "nan"], "--speed", "positive number"),
        (["run", "--timeout", "-1"], "--timeout", "positive number"),
        (["demo", "--port", "70000"], "--port", "port number"),
    ],
)
def test_out_of_range_arguments_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], argument: str, why: str
) -> None:
    rc, err = run(capsys, *args)
    assert rc == 2
    assert f"argument {argument}:" in err[-1] and why in err[-1]
    assert not (tmp_path / "x.jsonl").exists()


def _corrupt_gz(tmp_path: Path) -> Path:
    good = gzip.compress(b'{"a": 1}\n' * 1000)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(good[: len(good) // 2])
    return path


@pytest.mark.parametrize("kind", ["missing", "directory", "truncated gzip"])
@pytest.mark.parametrize("command", ["train", "score", "evaluate"])
def test_an_unreadable_data_file_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_dir: Path, command: str, kind: str
) -> None:
    data = {"missing": tmp_path / "nope.jsonl", "directory": tmp_path, "truncated gzip": _corrupt_gz(tmp_path)}[kind]
    out = tmp_path / "out"
    args = {
        "train": ["train", "--data", str(data), "--out", str(out)],
        "score": ["score", "--model", str(model_dir), "--data", str(data), "--out", str(out)],
        "evaluate": ["evaluate", "--model", str(model_dir), "--data", str(data)],
    }[command]
    rc, err = run(capsys, *args)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(f"detector: {data}: cannot read (")
    assert not out.exists()


def test_read_jsonl_raises_data_error_on_a_truncated_gzip(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cut.jsonl.gz: cannot read"):
        list(read_jsonl(_corrupt_gz(tmp_path)))


def test_a_file_without_one_valid_event_names_the_reasons(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_dir: Path
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"a": 1}\nnot json\n{"stream_id": "s", "ts": "yesterday", "amount": 1}\n')
    rc, err = run(capsys, "evaluate", "--model", str(model_dir), "--data", str(data))
    assert rc == 2 and len(err) == 1
    assert f"{data}: 0 usable events (3 invalid: " in err[0]
    assert "undecodable" in err[0] and "missing_field" in err[0]


def _events(streams: int, per_stream: int) -> str:
    rows = [
        {
            "event_id": f"e{s}-{i}",
            "stream_id": f"card-{s}",
            "ts": 1.7e9 + 3600 * i + s,
            "amount": 10.0 + i,
            "merchant_category": "grocery",
            "country": "US",
            "channel": "pos",
            "label": 0,
        }
        for s in range(streams)
        for i in range(per_stream)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.mark.parametrize(
    ("streams", "per_stream", "message"),
    [
        (5, 10, "50 usable normal events (no invalid lines); need at least 100"),
        (2, 60, "a stream of 60 events; training on fewer than 3 streams splits each in time and needs at least 350"),
        (60, 3, "calibration streams have no event past their first 3 (model.warmup_events)"),
    ],
)
def test_too_little_training_data_is_refused_before_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, streams: int, per_stream: int, message: str
) -> None:
    data = tmp_path / "small.jsonl"
    data.write_text(_events(streams, per_stream))
    out = tmp_path / "model"
    rc, err = run(capsys, "train", "--data", str(data), "--out", str(out))
    assert rc == 2
    assert err[-1].startswith(f"detector: {data}: ") and message in err[-1]
    assert not [line for line in err if "epoch" in line]  # refused before the first epoch
    assert not out.exists()


def test_a_bad_scenario_names_the_file_or_the_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    rc, err = run(capsys, "simulate", "--scenario", str(tmp_path / "none.yaml"), "--out", str(out))
    assert (rc, err) == (2, [f"scenario error: file not found: {tmp_path / 'none.yaml'}"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("subtlety: 3\n")
    rc, err = run(capsys, "simulate", "--scenario", str(bad), "--out", str(out))
    assert rc == 2 and len(err) == 1 and err[0].startswith("scenario error: subtlety: ")
    assert not out.exists()


def test_an_unwritable_output_is_one_line_naming_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "x.jsonl"  # a folder that cannot exist: its parent is a file
    rc, err = run(capsys, "simulate", "--streams", "2", "--days", "1", "--out", str(out))
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(f"detector: {out}: cannot write (")


def test_replay_of_an_unreadable_file_fails_before_connecting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # No broker listens on port 1: had replay connected first, the error would name the broker.
    missing = tmp_path / "nope.jsonl"
    rc, err = run(capsys, "replay", str(missing), "--bootstrap-servers", "127.0.0.1:1")
    assert rc == 2
    assert err == [f"detector: {missing}: cannot read (No such file or directory)"]


def test_unwritable_model_and_plot_folders_fail_before_the_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_dir: Path, test_file: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    data = tmp_path / "ok.jsonl"
    data.write_text(_events(20, 10))
    rc, err = run(capsys, "train", "--data", str(data), "--out", str(blocker / "model"))
    assert rc == 2 and err[-1].startswith(f"detector: {blocker / 'model'}: cannot write (")
    assert not [line for line in err if "epoch" in line]
    rc, err = run(
        capsys, "evaluate", "--model", str(model_dir), "--data", str(test_file), "--plots", str(blocker / "p")
    )
    assert (rc, len(err)) == (2, 1) and err[0].startswith(f"detector: {blocker / 'p'}: cannot write (")


def test_evaluating_unlabelled_events_is_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_dir: Path
) -> None:
    data = tmp_path / "unlabelled.jsonl"
    data.write_text(_events(3, 5).replace(', "label": 0', ""))
    rc, err = run(capsys, "evaluate", "--model", str(model_dir), "--data", str(data))
    assert (rc, err) == (2, [f"detector: {data}: events lack the 'label' field; evaluation needs labelled data"])


def test_a_baseline_whose_extra_is_missing_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, model_dir: Path, test_file: Path
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if `pip install 'detector[baselines]'` never ran
    rc, err = run(capsys, "evaluate", "--model", str(model_dir), "--data", str(test_file), "--baseline", "iforest")
    assert rc == 2
    assert len(err) == 1 and "sklearn" in err[0] and "'baselines' extra" in err[0]
