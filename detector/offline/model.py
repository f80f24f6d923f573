"""The Keras LSTM autoencoder: build it, and save and load the one model artifact.

    model = build_model(n_features, units=32, window=16, seed=7)   # trained by detector.offline.training
    save_artifact(model, make_metadata(...), Path("models/default"))
    art = load_artifact(Path("models/default"), spec)               # no TensorFlow; ModelError when incompatible
    art.weights, art.norm, art.threshold                            # what the scorer needs (NumPy)

The Keras model maps (x[B,T,F], h0[B,U], c0[B,U]) to (y[B,T,W*F], h_T, c_T): an LSTM whose
state is passed in and out, so training runs truncated BPTT over consecutive chunks of each
stream with the state carried across chunks, exactly the semantics of the streaming scorer; and a
Dense decoder that, from each step's h, reconstructs the last W normalised vectors and predicts
the next one (the second head).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector import __version__
from detector.config import FeaturesConfig
from detector.core.evidence import Evidence
from detector.core.features import FeatureSpec
from detector.core.scoring import LstmWeights, Normalizer
from detector.core.threshold import Threshold
from detector.exceptions import ModelError
from detector.offline.keras_file import KerasFileError, read_weights
from detector.runtime import filtered_native_stderr

# 2: calibrated surprise (evidence of tail probabilities, a profile part, 256-bit novelty sketches)
FORMAT_VERSION = 2
_FORBIDDEN_SUFFIXES = (".pkl", ".pickle", ".joblib", ".npy", ".npz")


@dataclass(frozen=True)
class Artifact:
    weights: LstmWeights
    norm: Normalizer
    threshold: Threshold
    metadata: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def window(self) -> int:
        return int(self.metadata["window"])

    @property
    def error_weights(self) -> np.ndarray | None:
        ew = self.metadata.get("error_weights")
        return None if ew is None else np.asarray(ew, np.float32)

    @property
    def embeddings(self) -> dict[str, np.ndarray]:
        """The learned tables of embedded categorical fields (none for other models)."""
        return {k: np.asarray(v, np.float32) for k, v in (self.metadata.get("embeddings") or {}).items()}

    @property
    def bucket_labels(self) -> dict[str, dict[str, str]]:
        """Per categorical field: bucket -> its most frequent training value (for explanations)."""
        return dict(self.metadata.get("bucket_labels") or {})

    def bind(self, spec: FeatureSpec) -> FeatureSpec:
        """`spec` with this model's embedding tables and running-median step, ready to featurise
        events for it."""
        return spec.with_embeddings(self.embeddings).with_median_step(self.metadata.get("median_step"))

    @property
    def evidence(self) -> Evidence | None:
        """The per-stream evidence the score adds up (None: the score is each event's error)."""
        ev = self.metadata.get("evidence")
        return None if ev is None else Evidence.from_dict(ev)

    @property
    def drift_reference(self) -> dict[str, Any] | None:
        """The calibration set's score and feature bins (detector.core.drift); None for models
        trained before drift was measured."""
        ref = self.metadata.get("drift_reference")
        return None if ref is None else dict(ref)

    @property
    def prediction_weight(self) -> float:
        return float(self.metadata.get("prediction_weight", 0.0))


def keras_env() -> Any:
    """Import Keras lazily (TensorFlow costs ~2 s and 500 MB), deterministic ops on; the notices
    TensorFlow prints to stderr while it loads are dropped (detector.runtime.IMPORT_NOISE)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "tensorflow" not in sys.modules:
        with filtered_native_stderr():
            import keras  # noqa: F401 - loads TensorFlow
    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    return keras


def build_model(n_features: int, units: int, window: int, seed: int, layers: int = 1) -> Any:
    """Inputs x, then (h0, c0) per layer; outputs y, then (h, c) per layer. Layer 1's names are
    `lstm`, `h0`, `c0`; layer k's `lstm_k`, `h0_k`, `c0_k` (a one-layer model is the same as before
    the `layers` key existed)."""
    keras = keras_env()
    init = keras.initializers
    x = keras.Input((None, n_features), name="x")
    seq, ins, outs = x, [], []
    for k in range(1, layers + 1):
        sfx = "" if k == 1 else f"_{k}"
        h0 = keras.Input((units,), name=f"h0{sfx}")
        c0 = keras.Input((units,), name=f"c0{sfx}")
        seq, h, c = keras.layers.LSTM(
            units,
            return_sequences=True,
            return_state=True,
            name=f"lstm{sfx}",
            kernel_initializer=init.GlorotUniform(seed=seed if k == 1 else seed + 2 * k + 1),
            recurrent_initializer=init.Orthogonal(seed=seed + 1 if k == 1 else seed + 2 * k + 2),
        )(seq, initial_state=[h0, c0])
        ins += [h0, c0]
        outs += [h, c]
    y = keras.layers.Dense(
        (window + 1) * n_features, name="decoder", kernel_initializer=init.GlorotUniform(seed=seed + 2)
    )(seq)
    return keras.Model([x, *ins], [y, *outs], name="lstm_autoencoder")


def lstm_layers(model: Any) -> list[Any]:
    """The model's LSTM layers, bottom first."""
    names = {layer.name for layer in model.layers}
    return [model.get_layer(n) for n in ["lstm", *(f"lstm_{k}" for k in range(2, 9))] if n in names]


def weights_of(model: Any, initial_state: dict[str, Any] | None = None) -> LstmWeights:
    """The Keras weights as NumPy; `initial_state` ({"h": [...], "c": [...]}, from the metadata)
    is the learned state new streams start from: the Keras model takes (h0, c0) as inputs, so the
    trained vectors travel in metadata.json (float32 values are exact in JSON's float64)."""
    layers = [tuple(np.asarray(a, dtype=np.float32) for a in lstm.get_weights()) for lstm in lstm_layers(model)]
    if not layers:
        raise ValueError("no layer named 'lstm'")
    decoder = tuple(np.asarray(a, dtype=np.float32) for a in model.get_layer("decoder").get_weights())
    return weights_from(layers, decoder, initial_state)


def weights_from(
    layers: list[tuple[np.ndarray, ...]], decoder: tuple[np.ndarray, ...], initial_state: dict[str, Any] | None
) -> LstmWeights:
    """LstmWeights of each LSTM layer's (kernel, recurrent, bias), bottom first, and the decoder's
    (kernel, bias), with the learned initial state when the metadata has one."""
    (k, r, b), stack = layers[0], tuple(layers[1:])
    dk, db = decoder
    if initial_state is None:
        return LstmWeights(k, r, b, dk, db, stack=stack)  # type: ignore[arg-type]
    h0, c0 = (np.asarray(initial_state[key], dtype=np.float32) for key in ("h", "c"))
    size = r.shape[0] * len(layers)
    if h0.shape != (size,) or c0.shape != (size,):
        raise ValueError(f"initial state of {h0.shape} and {c0.shape} for {len(layers)} x {r.shape[0]} units")
    return LstmWeights(k, r, b, dk, db, h0, c0, stack)  # type: ignore[arg-type]


def version_of(weights: LstmWeights, described: dict[str, Any]) -> str:
    h = hashlib.sha256()
    arrays = (weights.kernel, weights.recurrent, weights.bias, weights.dec_kernel, weights.dec_bias)
    for a in (*arrays, *(a for layer in weights.stack for a in layer)):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps(described, sort_keys=True).encode())
    return h.hexdigest()[:12]


def _scoring_of(extra: dict[str, Any]) -> dict[str, Any]:
    """Metadata that changes scores, so the version: error weights, the learned initial state,
    embedding tables, evidence statistics and the running median's step when the model has them."""
    keys = ("error_weights", "initial_state", "embeddings", "evidence", "median_step")
    return {k: extra[k] for k in keys if extra.get(k) is not None}


def make_metadata(
    model: Any, spec: FeatureSpec, norm: Normalizer, threshold: Threshold, window: int, extra: dict[str, Any]
) -> dict[str, Any]:
    keras = keras_env()
    import tensorflow as tf

    weights = weights_of(model, extra.get("initial_state"))
    described = spec.describe()
    return {
        "format_version": FORMAT_VERSION,
        "version": version_of(weights, {**described, "window": window, **_scoring_of(extra)}),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "detector_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "features": described,
        "window": window,
        "units": weights.units,
        "layers": weights.layers,
        "normalization": {"mean": norm.mean.tolist(), "std": norm.std.tolist()},
        "threshold": threshold.to_dict(),
        **extra,
    }


def save_artifact(model: Any, metadata: dict[str, Any], out: Path) -> None:
    """Write model.keras and metadata.json into `out` (created), replacing them atomically."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".model.keras.tmp.keras"
    model.save(tmp)
    os.replace(tmp, out / "model.keras")
    meta_tmp = out / ".metadata.json.tmp"
    meta_tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    os.replace(meta_tmp, out / "metadata.json")


def copy_artifact(src: Path, out: Path) -> None:
    """Copy a model folder's two files into `out` in `save_artifact`'s order and atomically each:
    a daemon watching `out` sees the new metadata.json only once model.keras is in place."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.keras", "metadata.json"):
        tmp = out / f".{name}.promote.tmp"
        shutil.copyfile(src / name, tmp)
        os.replace(tmp, out / name)


def _spec_difference(saved: dict[str, Any], running: dict[str, Any]) -> str | None:
    if saved == running:
        return None
    # A key added to the feature config after the model was saved takes its default there: models
    # saved before `novelty` existed had none, which is what the default (off) means.
    defaults = FeaturesConfig().model_dump(mode="json")
    a = {**defaults, **saved.get("config", {})}
    try:  # nested keys added later too (a categorical field's `embedding`)
        a = FeaturesConfig(**a).model_dump(mode="json")
    except ValueError:
        pass
    b = running.get("config", {})
    if a == b and saved.get("names") == running.get("names"):
        return None
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if keys:
        k = keys[0]
        return f"features.{k}: model has {a.get(k)!r}, config has {b.get(k)!r}"
    return "feature names differ"


def load_artifact(path: Path, spec: FeatureSpec | None = None) -> Artifact:
    """Load without Keras (detector.offline.keras_file); refuse pickles, layers other than a
    detector model's, weights of another model and a mismatched feature spec."""
    path = Path(path)
    meta_file, model_file = path / "metadata.json", path / "model.keras"
    if not meta_file.is_file() or not model_file.is_file():
        raise ModelError(f"model folder {path} lacks model.keras or metadata.json")
    forbidden = [p.name for p in path.iterdir() if p.suffix in _FORBIDDEN_SUFFIXES]
    if forbidden:
        raise ModelError(f"model folder {path} contains refused files: {', '.join(sorted(forbidden))}")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{meta_file}: unreadable metadata ({exc})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{meta_file}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    if spec is not None:
        diff = _spec_difference(meta.get("features", {}), spec.describe())
        if diff:
            raise ModelError(f"model {path} does not match the running config: {diff}")
    try:  # read without Keras: no TensorFlow in the daemon, and nothing in the file is executed
        lstms, decoder = read_weights(model_file)
    except KerasFileError as exc:
        raise ModelError(f"{model_file}: refused or unreadable ({str(exc)[:300]})") from None
    try:
        weights = weights_from(lstms, decoder, meta.get("initial_state"))
    except ValueError as exc:
        raise ModelError(f"{model_file}: not a detector model ({exc})") from None
    window = int(meta["window"])
    nf = len(meta["features"]["names"])
    if weights.dec_kernel.shape[1] != (window + 1) * nf or weights.kernel.shape[0] != nf:
        raise ModelError(f"{model_file}: weight shapes do not match window {window} x {nf} features")
    # The version is a hash of the weights and the scoring metadata: a model.keras of one training
    # run next to the metadata.json of another (a run killed between its two writes, a file copied
    # by hand) would otherwise score with one model's weights and the other's normalisation and
    # threshold, silently.
    found = version_of(weights, {**meta["features"], "window": window, **_scoring_of(meta)})
    if found != meta.get("version"):
        raise ModelError(
            f"{model_file} does not belong to {meta_file.name} (weights and metadata hash to {found}, the metadata "
            f"says {meta.get('version')}): the folder mixes two models; train again or restore both files"
        )
    stats = meta["normalization"]
    norm = Normalizer(np.array(stats["mean"], np.float32), np.array(stats["std"], np.float32))
    th = meta["threshold"]
    threshold = Threshold(**th)
    art = Artifact(weights, norm, threshold, meta)
    if spec is not None:
        try:
            art.bind(spec)
        except ValueError as exc:
            raise ModelError(f"{meta_file}: {exc}") from None
    return art
