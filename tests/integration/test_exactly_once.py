"""Exactly-once delivery (`kafka.delivery: exactly_once`) on the real broker, both clients: each
checkpoint is one transaction. Through SIGKILLs, a rebalance under load, a broker restart and a
fenced zombie, a read_committed reader of the alerts topic (ours, and kcat) sees every expected
alert exactly once, and every score equals an uninterrupted offline run's (no event's effect on
its stream's state applied twice)."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest

from detector.config import Settings
from detector.jsonl import read_jsonl
from tests.helpers import wait_for
from tests.integration.conftest import require
from tests.integration.kafka_io import all_committed, read_all
from tests.integration.test_faults import OUTAGE_S, Daemon, assert_uninterrupted_scores, paced_producer
from tests.integration.test_faults import settings as fault_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def eos(base: Settings, bootstrap: str, names: dict[str, str], model_dir: Path, tid: str) -> Settings:
    d = fault_settings(base, bootstrap, names, model_dir).model_dump()
    d["kafka"].update(delivery="exactly_once", transactional_id=f"{names['group']}-{tid}")
    return Settings(**d)


def keyed(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    return [(orjson.loads(x)["stream_id"].encode(), x) for x in lines]


def committed_alerts(bootstrap: str, topic: str) -> list[dict[str, object]]:
    return [orjson.loads(m.value) for m in read_all(bootstrap, topic, committed_only=True)]


def assert_exactly_once(bootstrap: str, names: dict[str, str], s: Settings, model_dir: Path, data: Path,
                        threshold: float, ids: list[str], logs: str) -> list[dict[str, object]]:  # fmt: skip
    """Every event's alert once in the read_committed view, each with the uninterrupted score."""
    got = committed_alerts(bootstrap, names["alerts"])
    seen = [str(a["alert_id"]) for a in got]
    dupes = {a for a, k in Counter(seen).items() if k > 1}
    assert not dupes, f"{len(dupes)} alerts committed twice, e.g. {sorted(dupes)[:3]}\n{logs[-3000:]}"
    missing = set(ids) - {str(a["event_id"]) for a in got}
    assert not missing, f"{len(missing)} events without a committed alert, e.g. {sorted(missing)[:3]}\n{logs[-3000:]}"
    assert_uninterrupted_scores({str(a["event_id"]): float(a["score"]) for a in got}, s, model_dir, data, threshold)  # type: ignore[arg-type]
    return got


def test_sigkill_repeatedly_each_alert_committed_once(  # type: ignore[no-untyped-def]
    broker, names, small_settings, model_dir, test_file, tmp_path: Path
) -> None:
    s = eos(small_settings, broker.bootstrap, names, model_dir, "a")
    lines = list(read_jsonl(test_file))
    ids = [orjson.loads(x)["event_id"] for x in lines]
    producer = None
    logs = ""
    for k, share in enumerate((4, 2)):  # killed twice mid-stream, then a run to the end
        (tmp_path / f"p{k}").mkdir()
        with Daemon(s, model_dir, tmp_path / f"p{k}") as d:
            wait_for(lambda: d.states[-1:] == [200], 120, "the daemon ready")
            producer = producer or paced_producer(broker.bootstrap, names["input"], lines, rate=len(lines) / 15)
            wait_for(lambda sh=share: len(committed_alerts(broker.bootstrap, names["alerts"])) > len(lines) // sh,
                     120, "part of the events' alerts committed")  # fmt: skip
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            logs += d.output()[-1500:]
    (tmp_path / "last").mkdir()
    with Daemon(s, model_dir, tmp_path / "last") as d:
        wait_for(lambda: d.states[-1:] == [200], 120, "the daemon ready")
        assert producer is not None
        producer.join(120)
        wait_for(lambda: all_committed(broker.bootstrap, names["group"], names["input"]), 180, "the last run to finish")
        assert d.stop() == 0
        logs += d.output()
    got = assert_exactly_once(broker.bootstrap, names, s, model_dir, test_file, d.threshold, ids, logs)
    # The kills left aborted alerts behind: a read_uncommitted reader sees them, read_committed not.
    assert len(read_all(broker.bootstrap, names["alerts"])) > len(got)
    # kcat, as an operator would read it (README): the same set, once each.
    kcat = require("kcat")
    out = subprocess.run(
        [kcat, "-b", broker.bootstrap, "-C", "-t", names["alerts"], "-o", "beginning", "-e", "-q",
         "-X", "isolation.level=read_committed", "-f", "%s\\n"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    by_kcat = [orjson.loads(x)["alert_id"] for x in out.splitlines() if x.strip()]
    assert sorted(by_kcat) == sorted(str(a["alert_id"]) for a in got)


def two_instances(base: Settings, bootstrap: str, names: dict[str, str], model_dir: Path, data: Path,
                  tmp: Path) -> tuple[Settings, Settings, list[bytes], list[str]]:  # fmt: skip
    """Instances A and B of one group (their own transactional ids and folders), the events, their ids."""
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    lines = list(read_jsonl(data))
    ids = [orjson.loads(x)["event_id"] for x in lines]
    return eos(base, bootstrap, names, model_dir, "a"), eos(base, bootstrap, names, model_dir, "b"), lines, ids


def test_two_instances_rebalance_under_load_each_alert_once(  # type: ignore[no-untyped-def]
    broker, names, small_settings, model_dir, test_file, tmp_path: Path
) -> None:
    sa, sb, lines, ids = two_instances(small_settings, broker.bootstrap, names, model_dir, test_file, tmp_path)
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(Daemon(sa, model_dir, tmp_path / "a"))
        wait_for(lambda: a.states[-1:] == [200], 120, "A ready")
        producer = paced_producer(broker.bootstrap, names["input"], lines, rate=len(lines) / 15)
        wait_for(lambda: len(committed_alerts(broker.bootstrap, names["alerts"])) > len(lines) // 4, 90,
                 "a quarter committed by A")  # fmt: skip
        b = stack.enter_context(Daemon(sb, model_dir, tmp_path / "b"))  # joins under load: a rebalance
        producer.join(120)
        wait_for(lambda: all_committed(broker.bootstrap, names["group"], names["input"]), 180, "all committed")
        assert a.stop() == 0 and b.stop() == 0
        logs = a.output() + b.output()
    assert "partitions revoked" in a.output(), a.output()[-2000:]
    assert_exactly_once(broker.bootstrap, names, sa, model_dir, test_file, a.threshold, ids, logs)


def test_broker_restart_mid_transaction_aborts_and_resumes_exactly_once(  # type: ignore[no-untyped-def]
    own_broker, names, small_settings, model_dir, test_file, tmp_path: Path
) -> None:
    s = eos(small_settings, own_broker.bootstrap, names, model_dir, "a")
    lines = list(read_jsonl(test_file))
    ids = [orjson.loads(x)["event_id"] for x in lines]
    with Daemon(s, model_dir, tmp_path) as d:
        wait_for(lambda: d.states[-1:] == [200], 120, "the daemon ready")
        producer = paced_producer(own_broker.bootstrap, names["input"], lines, rate=len(lines) / 20)
        wait_for(lambda: len(committed_alerts(own_broker.bootstrap, names["alerts"])) > len(lines) // 10, 60,
                 "a tenth committed")  # fmt: skip
        assert own_broker.script("stop").returncode == 0  # a transaction is open: events keep coming
        threading.Event().wait(OUTAGE_S)  # the outage itself: the broker stays down this long
        assert own_broker.script("start").returncode == 0
        producer.join(300)
        wait_for(lambda: all_committed(own_broker.bootstrap, names["group"], names["input"]), 240,
                 "every offset committed after the outage")  # fmt: skip
        assert d.stop() == 0
        out = d.output()
    assert "Kafka failure" in out, out[-3000:]
    assert_exactly_once(own_broker.bootstrap, names, s, model_dir, test_file, d.threshold, ids, out)


def assigned_inputs(log: str, topic: str) -> int:
    """Input partitions in the daemon's last 'partitions assigned' line."""
    lines = [x for x in log.splitlines() if "partitions assigned:" in x]
    return len(re.findall(rf"\('{re.escape(topic)}', \d+\)", lines[-1])) if lines else 0


def test_a_fenced_zombie_cannot_commit(  # type: ignore[no-untyped-def]
    broker, names, small_settings, model_dir, test_file, tmp_path: Path
) -> None:
    sa, sb, lines, ids = two_instances(small_settings, broker.bootstrap, names, model_dir, test_file, tmp_path)
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(Daemon(sa, model_dir, tmp_path / "a"))
        wait_for(lambda: a.states[-1:] == [200], 120, "A ready")
        b = stack.enter_context(Daemon(sb, model_dir, tmp_path / "b"))
        wait_for(lambda: assigned_inputs(b.output(), names["input"]) == 2 and a.states[-1:] == [200], 120,
                 "the partitions split")  # fmt: skip
        producer = paced_producer(broker.bootstrap, names["input"], lines, rate=len(lines) / 20)
        wait_for(lambda: len(read_all(broker.bootstrap, names["alerts"])) > len(lines) // 5, 60, "scoring under way")
        a.proc.send_signal(signal.SIGSTOP)  # A hangs with a transaction open, past its session timeout
        try:
            wait_for(lambda: assigned_inputs(b.output(), names["input"]) == 4, 60, "B to take A's partitions")
        finally:
            a.proc.send_signal(signal.SIGCONT)  # the zombie wakes up and tries to go on
        producer.join(120)
        wait_for(lambda: all_committed(broker.bootstrap, names["group"], names["input"]), 180, "all committed")
        assert a.stop() == 0 and b.stop() == 0
        logs = a.output() + b.output()
    zombie = a.output()
    # Refused by the broker (its group generation is gone), by its own check (paused past its
    # session timeout), or by the lost-partitions callback: every way, the zombie aborted.
    fenced = ("transaction aborted", "not committing", "lost with a transaction open")
    assert any(f in zombie for f in fenced), zombie[-3000:]
    assert_exactly_once(broker.bootstrap, names, sa, model_dir, test_file, a.threshold, ids, logs)
