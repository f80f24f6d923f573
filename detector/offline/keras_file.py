"""Read the detector's `model.keras` without Keras: the daemon scores with NumPy, so loading a
model need not import TensorFlow (seconds of start-up and ~500 MB per process).

    lstm_layers, (dec_kernel, dec_bias) = read_weights(Path("models/default/model.keras"))

A `.keras` file is a zip of `config.json` (the layer graph) and `model.weights.h5` (HDF5: each
layer's variables under `layers/<snake_case class name>[_<n>]/.../vars/<i>`, numbered in the
graph's layer order). Only the three layer types a detector model is built of are accepted, with
the activations the NumPy scorer computes; nothing in the file is executed (stricter than Keras's
safe mode, which refuses a Lambda layer's code but builds any layer class it knows). Whether the
weights belong to the metadata beside them is checked by the caller, from their hash
(detector.offline.model.load_artifact).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

ALLOWED = ("InputLayer", "LSTM", "Dense")
# What the scorer (detector.core.scoring) computes: a config saying otherwise is another model.
_LSTM_MATH = {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True, "go_backwards": False}
_DENSE_MATH = {"activation": "linear", "use_bias": True}
_MAX_MEMBER = 512 << 20  # a model of this kind is kilobytes to a few MB; a zip bomb is refused


class KerasFileError(ValueError):
    """The file is not a detector model this reader accepts; the message says why."""


def _snake(name: str) -> str:
    """Keras's own naming of a saved layer's HDF5 group (keras.src.utils.naming.to_snake_case)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _member(z: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = z.getinfo(name)
    except KeyError:
        raise KerasFileError(f"no {name} in the archive") from None
    if info.file_size > _MAX_MEMBER:
        raise KerasFileError(f"{name} is {info.file_size:,} bytes")
    return z.read(name)


def _layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    if config.get("class_name") != "Functional":
        raise KerasFileError(f"a {config.get('class_name')!r} model, not a Functional one")
    layers = config.get("config", {}).get("layers")
    if not isinstance(layers, list):
        raise KerasFileError("config.json has no layer list")
    for layer in layers:
        kind, cfg = layer.get("class_name"), layer.get("config") or {}
        if kind not in ALLOWED:
            raise KerasFileError(f"layer {cfg.get('name')!r} is a {kind}: only {', '.join(ALLOWED)} are accepted")
        math = _LSTM_MATH if kind == "LSTM" else _DENSE_MATH if kind == "Dense" else {}
        for key, want in math.items():
            if cfg.get(key) != want:
                raise KerasFileError(f"layer {cfg.get('name')!r} has {key}={cfg.get(key)!r}, the scorer needs {want!r}")
    return layers


def _vars(h5: Any, group: str) -> tuple[np.ndarray, ...]:
    """The arrays under `group`'s `vars` (an LSTM's are under its cell), in their saved order."""
    node = h5.get(f"layers/{group}")
    if node is None:
        raise KerasFileError(f"model.weights.h5 has no layer {group!r}")
    vars_ = node["cell/vars"] if "cell" in node else node["vars"]
    return tuple(np.asarray(vars_[str(i)], dtype=np.float32) for i in range(len(vars_)))


def read_weights(path: Path) -> tuple[list[tuple[np.ndarray, ...]], tuple[np.ndarray, ...]]:
    """Each LSTM layer's (kernel, recurrent kernel, bias), bottom first, and the decoder's
    (kernel, bias). KerasFileError when the file is not such a model."""
    import h5py

    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(_member(z, "config.json"))
            weights = _member(z, "model.weights.h5")
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KerasFileError(f"not a .keras archive ({exc})") from None
    layers = _layers(config)
    seen: dict[str, int] = {}
    lstms: list[tuple[np.ndarray, ...]] = []
    decoder: tuple[np.ndarray, ...] | None = None
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            for layer in layers:
                base = _snake(layer["class_name"])
                n = seen.get(base, 0)
                seen[base] = n + 1
                group = base if n == 0 else f"{base}_{n}"
                if layer["class_name"] == "LSTM":
                    lstms.append(_vars(h5, group))
                elif layer["class_name"] == "Dense":
                    if decoder is not None or layer["config"].get("name") != "decoder":
                        raise KerasFileError("one Dense layer, named 'decoder', is expected")
                    decoder = _vars(h5, group)
    except OSError as exc:
        raise KerasFileError(f"model.weights.h5 is unreadable ({exc})") from None
    if not lstms or decoder is None:
        raise KerasFileError("an LSTM layer and a Dense 'decoder' are expected")
    if any(len(v) != 3 for v in lstms) or len(decoder) != 2:
        raise KerasFileError("an LSTM has kernel, recurrent kernel and bias; the decoder kernel and bias")
    return lstms, decoder
