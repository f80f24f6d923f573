"""deploy/kafka/broker's status reports, and its refusals, against the session broker."""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.conftest import BROKER

pytestmark = pytest.mark.integration


def test_status_reports_the_running_broker(broker) -> None:  # type: ignore[no-untyped-def]
    r = broker.script("status")
    assert r.returncode == 0 and "answering" in r.stdout


def test_status_of_a_data_dir_without_a_broker(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = subprocess.run([str(BROKER), "status", "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 3 and "not running" in r.stdout


def test_stop_without_a_pid_file_touches_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = subprocess.run([str(BROKER), "stop", "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0 and "not running" in r.stdout


def test_bad_arguments_are_a_usage_error() -> None:
    r = subprocess.run([str(BROKER), "start", "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
