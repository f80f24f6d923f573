"""The TensorFlow-free reader of model.keras gives Keras's own weights, and refuses other models."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from detector.offline.keras_file import KerasFileError, read_weights
from detector.offline.model import build_model, keras_env, lstm_layers

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("layers", [1, 3])
def test_the_reader_gives_the_weights_keras_loads(tmp_path: Path, layers: int) -> None:
    model = build_model(5, units=4, window=2, seed=3, layers=layers)
    model.save(tmp_path / "model.keras")
    lstms, (dk, db) = read_weights(tmp_path / "model.keras")
    loaded = keras_env().saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    want = [lstm.get_weights() for lstm in lstm_layers(loaded)]
    assert len(lstms) == layers
    for got, exp in zip(lstms, want, strict=True):
        for a, b in zip(got, exp, strict=True):
            np.testing.assert_array_equal(a, b)
    for a, b in zip((dk, db), loaded.get_layer("decoder").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def _rewrite_config(src: Path, out: Path, edit: object) -> Path:
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(members["config.json"])
    edit(cfg)  # type: ignore[operator]
    members["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(out, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    return out


def _set_decoder(cfg: dict, key: str, value: object) -> None:
    for layer in cfg["config"]["layers"]:
        if layer["config"]["name"] == "decoder":
            layer["config"][key] = value


def test_other_math_and_other_layers_are_refused(model_dir: Path, tmp_path: Path) -> None:
    src = model_dir / "model.keras"
    relu = _rewrite_config(src, tmp_path / "relu.keras", lambda c: _set_decoder(c, "activation", "relu"))
    with pytest.raises(KerasFileError, match="activation='relu', the scorer needs 'linear'"):
        read_weights(relu)
    conv = _rewrite_config(
        src, tmp_path / "conv.keras", lambda c: c["config"]["layers"][-1].update(class_name="Conv1D")
    )
    with pytest.raises(KerasFileError, match="is a Conv1D: only InputLayer, LSTM, Dense are accepted"):
        read_weights(conv)
    with pytest.raises(KerasFileError, match="not a .keras archive"):
        (tmp_path / "junk.keras").write_bytes(b"PK\x03\x04 not really")
        read_weights(tmp_path / "junk.keras")


def test_loading_a_model_does_not_import_tensorflow(model_dir: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from detector.offline.model import load_artifact; "
        f"a = load_artifact(Path({str(model_dir)!r})); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported'; print(a.version)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == json.loads((model_dir / "metadata.json").read_text())["version"]
