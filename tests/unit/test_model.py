from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.config import FeaturesConfig, Settings
from detector.core.features import FeatureSpec
from detector.exceptions import ModelError
from detector.offline.dataset import load_events
from detector.offline.model import _scoring_of, keras_env, load_artifact, version_of, weights_of
from detector.offline.training import train_from_file
from tests.helpers import lstm_scored


def _scores(model_dir: Path, settings: Settings, data: Path) -> np.ndarray:
    spec = FeatureSpec(settings.features)
    art = load_artifact(model_dir, spec)
    spec = art.bind(spec)
    ds = load_events(data, spec)
    return lstm_scored(art, spec, ds.events[:3000], 3, art.threshold.value).score


def test_artifact_has_model_and_metadata(model_dir: Path, small_settings: Settings) -> None:
    meta = json.loads((model_dir / "metadata.json").read_text())
    for key in (
        "version",
        "created_at",
        "features",
        "window",
        "normalization",
        "threshold",
        "training",
        "tensorflow_version",
        "keras_version",
    ):
        assert key in meta
    assert meta["threshold"]["value"] > 0
    assert (model_dir / "model.keras").is_file() and (model_dir / "training.png").is_file()
    # The running median's step, fitted on the training data, is what a bound spec uses.
    spec = FeatureSpec(small_settings.features)
    assert meta["median_step"] > 0 and load_artifact(model_dir, spec).bind(spec).median_step == meta["median_step"]


def test_save_load_round_trip_gives_identical_scores(
    model_dir: Path, small_settings: Settings, test_file: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert np.array_equal(_scores(model_dir, small_settings, test_file), _scores(copy, small_settings, test_file))


def test_same_seed_same_model_and_scores(
    model_dir: Path, small_settings: Settings, train_file: Path, test_file: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    train_from_file(small_settings, train_file, again, log=lambda _m: None)
    a = json.loads((model_dir / "metadata.json").read_text())
    b = json.loads((again / "metadata.json").read_text())
    assert a["version"] == b["version"]
    assert a["threshold"] == b["threshold"]
    assert np.array_equal(_scores(model_dir, small_settings, test_file), _scores(again, small_settings, test_file))


def test_new_streams_start_from_the_learned_initial_state(
    model_dir: Path, small_settings: Settings, test_file: Path, tmp_path: Path
) -> None:
    """Training learns (h0, c0); the artifact carries them; a model without them (saved before
    they existed) loads with zeros and scores a stream's first events differently."""
    art = load_artifact(model_dir, FeatureSpec(small_settings.features))
    assert art.weights.h0 is not None and art.weights.c0 is not None
    assert art.weights.h0.shape == (art.weights.units,) and np.abs(art.weights.c0).max() > 1e-3
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    meta = json.loads((old / "metadata.json").read_text())
    del meta["initial_state"]
    meta["version"] = _version(old, meta)  # as that model's own metadata hashed
    (old / "metadata.json").write_text(json.dumps(meta))
    assert load_artifact(old).weights.h0 is None
    learned, zeros = _scores(model_dir, small_settings, test_file), _scores(old, small_settings, test_file)
    assert not np.allclose(learned, zeros)


def test_mismatched_feature_config_is_refused_with_the_difference(model_dir: Path) -> None:
    other = FeaturesConfig(categorical=({"name": "channel", "buckets": 5},))
    with pytest.raises(ModelError, match=r"features\.categorical"):
        load_artifact(model_dir, FeatureSpec(other))


def test_a_model_saved_before_a_new_feature_key_existed_still_loads(model_dir: Path, tmp_path: Path) -> None:
    """`features.novelty` came later: a model without it in its metadata has it off (the default),
    and loads under a config that leaves it off; a config that turns it on is refused."""
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    meta = json.loads((old / "metadata.json").read_text())
    del meta["features"]["config"]["novelty"]
    meta["version"] = _version(old, meta)  # as that model's own metadata hashed
    (old / "metadata.json").write_text(json.dumps(meta))
    assert load_artifact(old, FeatureSpec(FeaturesConfig())).version == meta["version"]
    with pytest.raises(ModelError, match=r"features\.novelty"):
        load_artifact(old, FeatureSpec(FeaturesConfig(novelty=("country",))))


def _version(folder: Path, meta: dict[str, Any]) -> str:
    model = keras_env().saving.load_model(folder / "model.keras", safe_mode=True, compile=False)
    weights = weights_of(model, meta.get("initial_state"))
    return version_of(weights, {**meta["features"], "window": meta["window"], **_scoring_of(meta)})


def test_a_model_file_of_another_training_run_is_refused(
    model_dir: Path, small_settings: Settings, train_file: Path, tmp_path: Path
) -> None:
    """A run killed between writing model.keras and metadata.json, or a file copied by hand, leaves
    one model's weights next to another's normalisation and threshold: refused, naming both."""
    other = tmp_path / "other"
    train_from_file(small_settings, train_file, other, log=lambda _m: None, epochs=1, seed=99)
    mixed = tmp_path / "mixed"
    shutil.copytree(model_dir, mixed)
    shutil.copy(other / "model.keras", mixed / "model.keras")
    version = json.loads((mixed / "metadata.json").read_text())["version"]
    with pytest.raises(ModelError, match=rf"does not belong to metadata.json .*the metadata says {version}"):
        load_artifact(mixed)
    assert load_artifact(other).version != version  # each folder alone loads


def test_pickles_in_the_model_folder_are_refused(model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "extra.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(ModelError, match="refused files: extra.pkl"):
        load_artifact(bad)


def test_lambda_layers_are_refused(model_dir: Path, tmp_path: Path) -> None:
    keras = keras_env()
    bad = tmp_path / "lambda"
    shutil.copytree(model_dir, bad)
    inp = keras.Input((3,))
    out = keras.layers.Lambda(lambda x: x * 2)(inp)
    keras.Model(inp, out).save(bad / "model.keras")
    with pytest.raises(ModelError, match="refused or unreadable"):
        load_artifact(bad)


def test_corrupt_model_file_is_refused(model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt"
    shutil.copytree(model_dir, bad)
    (bad / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError):
        load_artifact(bad)


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="lacks model.keras"):
        load_artifact(tmp_path / "nowhere")
