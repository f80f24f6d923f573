"""Fixtures shared by both tiers: a small simulated data set and a small trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from detector.config import Settings, load_config
from detector.jsonl import write_jsonl
from simulators.cards import simulate_cards
from simulators.output import card_records
from simulators.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def default_settings() -> Settings:
    return load_config(ROOT / "config" / "detector.yaml")


def _easy_cards(tmp_path_factory: pytest.TempPathFactory, name: str, cards: int, seed: int) -> Path:
    path = tmp_path_factory.mktemp("data") / f"{name}.jsonl"
    cols = simulate_cards(cards, 20, load_scenario(ROOT / "config/scenarios/easy.yaml"), seed=seed)
    write_jsonl(card_records(cols), str(path))
    return path


@pytest.fixture(scope="session")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _easy_cards(tmp_path_factory, "train", 300, 11)


@pytest.fixture(scope="session")
def test_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _easy_cards(tmp_path_factory, "test", 150, 12)


@pytest.fixture(scope="session")
def small_settings(default_settings: Settings) -> Settings:
    """The default config with a small, quick model (the feature schema is the default one)."""
    data = default_settings.model_dump()
    # 1 in 1,000: a 30-card calibration set (what 300 training cards leave) supports it without
    # extrapolating far past its own tail; the tests need alerts on the easy test file.
    data["model"].update(window=8, units=16, epochs=3, batch_size=32, chunk_length=16, target_false_alarm_rate=1e-3)
    return Settings(**data)


@pytest.fixture(scope="session")
def model_dir(small_settings: Settings, train_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from detector.offline.training import train_from_file

    out = tmp_path_factory.mktemp("model") / "m"
    train_from_file(small_settings, train_file, out, log=lambda _m: None)
    return out


@pytest.fixture(scope="session")
def rival_dir(small_settings: Settings, train_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model of the same data and config, another seed: another version (a challenger)."""
    from detector.offline.training import train_from_file

    out = tmp_path_factory.mktemp("rival") / "m"
    train_from_file(small_settings, train_file, out, log=lambda _m: None, seed=99)
    return out
