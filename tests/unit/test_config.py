from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from detector.config import Settings, load_config
from detector.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_yaml_equals_the_code_defaults() -> None:
    # The documented default file and the built-in defaults must never drift apart.
    assert load_config(ROOT / "config/detector.yaml") == Settings()


def test_every_key_of_the_defaults_is_documented_in_the_yaml() -> None:
    shipped = yaml.safe_load((ROOT / "config/detector.yaml").read_text())
    defaults = Settings().model_dump(mode="json")
    assert set(shipped) == set(defaults)
    for section, values in defaults.items():
        assert set(shipped[section]) == set(values), section


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"kafka": {"bogus": 1}}, "kafka.bogus"),
        ({"nope": {}}, "nope"),
        ({"model": {"window": "abc"}}, "model.window"),
        ({"model": {"window": 0}}, "model.window"),
        ({"kafka": {"security_protocol": "TLS"}}, "kafka.security_protocol"),
        ({"kafka": {"client": "librdkafka"}}, "kafka.client"),
        ({"http": {"port": 70000}}, "http.port"),
        ({"features": {"numeric": [{"name": "label"}]}}, "features"),
        ({"features": {"categorical": [{"name": "m", "buckets": 1024}]}}, "features.categorical.0"),
        ({"features": {"categorical": [{"name": "m", "buckets": 8, "embedding": 8}]}}, "features.categorical.0"),
        (
            {"features": {"categorical": [{"name": "m", "buckets": 8, "embedding": -1}]}},
            "features.categorical.0.embedding",
        ),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, doc: dict[str, object], key: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"config error: {key}")


def test_confluent_without_the_extra_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "confluent_kafka" else real(n, *a))
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"kafka": {"client": "confluent"}}))
    with pytest.raises(ConfigError, match=r"^config error: kafka\.client: .*pip install 'detector\[fast\]'"):
        load_config(p)


@pytest.mark.parametrize(
    "features", [{"categorical": [{"name": "fraud_type", "buckets": 4}]}, {"novelty": ["fraud_type"]}]
)
def test_label_fields_can_never_be_features(tmp_path: Path, features: dict[str, object]) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"features": features}))
    with pytest.raises(ConfigError, match="label fields cannot be features: fraud_type"):
        load_config(p)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": "file:1", "group_id": "g"}}))
    monkeypatch.setenv("DETECTOR__KAFKA__BOOTSTRAP_SERVERS", "env:2")
    monkeypatch.setenv("DETECTOR__MODEL__WINDOW", "12")
    s = load_config(p)
    assert s.kafka.bootstrap_servers == "env:2"
    assert s.kafka.group_id == "g"
    assert s.model.window == 12


def test_bad_environment_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETECTOR__STATE__MAX_STREAMS", "lots")
    with pytest.raises(ConfigError, match=r"^config error: state.max_streams"):
        load_config(None)


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen models
        s.kafka.group_id = "x"  # type: ignore[misc]


def test_check_config_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("kafka:\n  max_poll_records: -5\n")
    r = subprocess.run([sys.executable, "-m", "detector.cli", "check-config", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("config error: kafka.max_poll_records")


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("kafka:\n  sasl_mechanism: PLAIN\n  sasl_username: u\n  sasl_password: hunter2-secret\n")
    r = subprocess.run([sys.executable, "-m", "detector.cli", "check-config", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "hunter2-secret" not in r.stdout + r.stderr
    assert '"sasl_username": "u"' in r.stdout


@pytest.mark.parametrize(("section", "key"), [("kafka", "sasl_password"), ("http", "basic_auth_password")])
def test_secrets_can_come_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, key: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-mounted-file\n")
    other = "basic_auth_username" if section == "http" else "sasl_username"
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({section: {f"{key}_file": str(secret), other: "u"}}))
    s = load_config(p)
    assert getattr(s, section).model_dump()[key].get_secret_value() == "from-a-mounted-file"
    assert "from-a-mounted-file" not in str(s.masked())
    # The same through the environment, with no secret in the YAML at all.
    p.write_text(yaml.safe_dump({section: {other: "u"}}))
    monkeypatch.setenv(f"DETECTOR__{section.upper()}__{key.upper()}_FILE", str(secret))
    assert getattr(load_config(p), section).model_dump()[key].get_secret_value() == "from-a-mounted-file"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"kafka": {"sasl_password_file": "/nonexistent/pw"}}, "kafka.sasl_password_file: cannot read /nonexistent/pw"),
        (
            {"kafka": {"sasl_password": "x", "sasl_password_file": "/x"}},
            "kafka.sasl_password_file: sasl_password is set too",
        ),
        ({"kafka": {"sasl_username_file": "/x"}}, "kafka.sasl_username_file: Extra inputs"),
    ],
)
def test_bad_secret_file_is_one_line_naming_the_key(tmp_path: Path, doc: dict[str, object], expected: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value).startswith(f"config error: {expected}") and "\n" not in str(err.value), err.value


def _leaf_keys(d: dict[str, object], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        out += _leaf_keys(v, path + ".") if isinstance(v, dict) else [path]
    return out


@pytest.mark.parametrize("key", _leaf_keys(Settings().model_dump(mode="json")))
def test_every_key_with_a_bad_value_is_one_line_naming_it(tmp_path: Path, key: str) -> None:
    section, name = key.split(".", 1)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({section: {name: {"not": "a valid value for any key"}}}))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"config error: {key}"), msg


def test_secrets_never_reach_the_logs_of_a_failing_run(tmp_path: Path, model_dir: Path) -> None:
    import os

    from tests.helpers import free_port

    p = tmp_path / "c.yaml"
    p.write_text(
        f"kafka:\n  bootstrap_servers: 127.0.0.1:{free_port()}\n  security_protocol: SASL_PLAINTEXT\n"
        "  sasl_mechanism: SCRAM-SHA-512\n  sasl_username: u\n"
        f"model:\n  path: {model_dir}\n"
    )
    env = {**os.environ, "DETECTOR__KAFKA__SASL_PASSWORD": "hunter2-from-env", "DETECTOR__HTTP__PORT": "0"}
    r = subprocess.run(
        [sys.executable, "-m", "detector.cli", "run", "--config", str(p)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "effective config" in out and "Kafka" in out  # it could not connect
    assert "hunter2-from-env" not in out
    assert '"sasl_password": "**********"' in out
