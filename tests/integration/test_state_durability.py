"""State survives restarts and moves with partitions; nothing is lost after SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
import yaml

from detector.config import Settings
from detector.jsonl import read_jsonl
from detector.offline.evaluate import score_dataset
from detector.service.loop import Detector
from tests.helpers import free_port, wait_for
from tests.integration.kafka_io import all_committed, committed, produce, read_all
from tests.integration.test_pipeline import alert_everything_model, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def offline_alerts(settings: Settings, model_dir: Path, path: Path) -> set[str]:
    _, ds, r = score_dataset(settings, model_dir, path)
    return {e.event_id for e, a in zip(ds.events, r.alert, strict=True) if a}


def keyed(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    return [(orjson.loads(x)["stream_id"].encode(), x) for x in lines]


def run_in_thread(app: Detector, **kw: object) -> threading.Thread:
    t = threading.Thread(target=app.run, kwargs=kw, daemon=True)
    t.start()
    return t


def alert_ids(bootstrap: str, topic: str, expect: int) -> list[str]:
    return [orjson.loads(m.value)["event_id"] for m in read_all(bootstrap, topic, expect=expect)]


def test_restart_continues_each_streams_state(broker, names, small_settings, model_dir, test_file) -> None:  # type: ignore[no-untyped-def]
    s = settings_for(small_settings, broker.bootstrap, names, model_dir)
    lines = list(read_jsonl(test_file))
    half = len(lines) // 2
    produce(broker.bootstrap, names["input"], keyed(lines[:half]))
    a = Detector(s)
    a.run(max_events=half, timeout=120)
    assert a.stats.events == half

    b = Detector(s)
    t = run_in_thread(b, timeout=120)
    wait_for(lambda: b.ready(), 60, "B ready")
    # Ready is set only after the restore: the state of A's streams is already in B's table.
    assert len(b.table) == len({orjson.loads(x)["stream_id"] for x in lines[:half]})
    produce(broker.bootstrap, names["input"], keyed(lines[half:]))
    wait_for(lambda: b.stats.events >= len(lines) - half, 90, "the second half consumed")
    b.stop()
    t.join(30)
    # B started from A's state, not cold: its first scores of each stream continued A's.
    assert b.stats.warming < a.stats.warming / 4
    expected = offline_alerts(s, model_dir, test_file)
    got = alert_ids(broker.bootstrap, names["alerts"], a.stats.alerts + b.stats.alerts)
    assert len(got) == len(set(got))  # a clean stop re-scores nothing
    assert set(got) == expected
    assert all_committed(broker.bootstrap, names["group"], names["input"])


def test_two_instances_split_partitions_and_state_moves(broker, names, small_settings, model_dir, test_file) -> None:  # type: ignore[no-untyped-def]
    s = settings_for(small_settings, broker.bootstrap, names, model_dir)
    lines = list(read_jsonl(test_file))
    half = len(lines) // 2
    produce(broker.bootstrap, names["input"], keyed(lines[:half]))
    a = Detector(s)
    ta = run_in_thread(a, timeout=240)
    wait_for(lambda: a.stats.events >= half, 90, "A consumed the first half")
    b = Detector(s)
    tb = run_in_thread(b, timeout=240)
    wait_for(
        lambda: b.ready() and a.ready() and len(b.table) > 0 and len(a.assigned) < 4,
        90,
        "B to join and restore its partitions",
    )
    produce(broker.bootstrap, names["input"], keyed(lines[half:]))
    wait_for(
        lambda: all_committed(broker.bootstrap, names["group"], names["input"]),
        120,
        "all offsets committed",
    )
    a.stop()
    b.stop()
    ta.join(30)
    tb.join(30)
    assert b.stats.events > 0 and a.stats.events > half
    # Moved streams continued from A's checkpoint: the alerts are exactly those of one uninterrupted run.
    got = set(alert_ids(broker.bootstrap, names["alerts"], a.stats.alerts + b.stats.alerts))
    assert got == offline_alerts(s, model_dir, test_file)


def test_sigkill_loses_no_event(broker, names, small_settings, model_dir, test_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A copy of the model whose threshold is below every score: every scored event raises an
    # alert, so the alerts topic is the set of scored event ids.
    m = tmp_path / "model"
    alert_everything_model(model_dir, m)
    cfg = settings_for(small_settings, broker.bootstrap, names, m).model_dump(mode="json")
    cfg["model"]["warmup_events"] = 0
    cfg["state"]["checkpoint_interval_seconds"] = 1.0
    cfg["kafka"].update(max_poll_records=200, session_timeout_ms=6000)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    lines = list(read_jsonl(test_file))
    ids = {orjson.loads(x)["event_id"] for x in lines}
    produce(broker.bootstrap, names["input"], keyed(lines))

    def start(name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "DETECTOR__HTTP__PORT": str(free_port())}
        out = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [sys.executable, "-m", "detector.cli", "run", "--config", str(path)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    p1 = start("p1")
    try:
        wait_for(
            lambda: len(read_all(broker.bootstrap, names["alerts"])) > len(lines) // 3,
            120,
            "a third of the events scored",
        )
    finally:
        p1.send_signal(signal.SIGKILL)
        p1.wait()
    committed_at_kill = committed(broker.bootstrap, names["group"], names["input"])
    p2 = start("p2")
    try:
        wait_for(
            lambda: all_committed(broker.bootstrap, names["group"], names["input"]),
            180,
            "the restarted daemon to finish",
        )
    finally:
        p2.send_signal(signal.SIGTERM)
        p2.wait(30)
    got = [orjson.loads(m.value)["event_id"] for m in read_all(broker.bootstrap, names["alerts"])]
    missing = ids - set(got)
    logs = "\n".join((tmp_path / f"{n}.log").read_text()[-1500:] for n in ("p1", "p2"))
    assert not missing, f"{len(missing)} events never scored, e.g. {sorted(missing)[:5]}\n{logs}"
    # Duplicates come only from the uncommitted tail: events at or after the committed offset
    # of their partition at the moment of the kill.
    where = {
        orjson.loads(m.value)["event_id"]: (m.partition, m.offset)
        for m in read_all(broker.bootstrap, names["input"], expect=len(lines))
    }
    seen: set[str] = set()
    dupes = [e for e in got if e in seen or seen.add(e)]  # type: ignore[func-returns-value]
    for e in dupes:
        part, off = where[e]
        assert off >= committed_at_kill.get(part, 0), (e, part, off, committed_at_kill)


def test_two_processes_one_sigkilled_mid_stream_the_other_takes_over(  # type: ignore[no-untyped-def]
    broker, names, small_settings, model_dir, test_file, tmp_path: Path
) -> None:
    """Two `detector run` processes share a 4-partition topic while events flow; one is killed
    with SIGKILL. The survivor is given the dead one's partitions when its session times out,
    restores their state from the changelog and scores on: every event id is scored at least
    once, and the events above the real threshold (so the incidents caught) are exactly those
    of one uninterrupted run."""
    from tests.integration.test_faults import Daemon, paced_producer, scored
    from tests.integration.test_faults import settings as fault_settings
    from tests.integration.test_pipeline import blatant_stream

    s = fault_settings(small_settings, broker.bootstrap, names, model_dir)
    # The test scenario plus one incident that any working model catches, so "every incident the
    # uninterrupted run catches is caught" is never vacuous.
    extra = [{**e, "incident_id": "inc-blatant"} if e["label"] == 1 else e for e in blatant_stream()]
    lines = list(read_jsonl(test_file)) + [orjson.dumps(e) for e in extra]
    data = tmp_path / "events.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    events = [orjson.loads(x) for x in lines]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(Daemon(s, model_dir, tmp_path / "a"))
        # One after the other: the first creates the topics (a group formed before they exist
        # starts with empty assignments and splits them only at a later metadata refresh).
        wait_for(lambda: a.states[-1:] == [200], 120, "the first ready")
        b = stack.enter_context(Daemon(s, model_dir, tmp_path / "b"))
        wait_for(lambda: a.states[-1:] == [200] and b.states[-1:] == [200], 120, "both ready, partitions split")
        producer = paced_producer(broker.bootstrap, names["input"], lines, rate=len(lines) / 15)
        wait_for(
            lambda: len(read_all(broker.bootstrap, names["alerts"])) > len(lines) // 3,
            90,
            "a third of the events scored",
        )
        assert b.states[-1] == 200 and a.proc.poll() is None  # both still sharing the topic
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(30)
        producer.join(120)
        wait_for(
            lambda: all_committed(broker.bootstrap, names["group"], names["input"]),
            180,
            "the survivor to take over every partition and finish",
        )
        assert b.stop() == 0, b.output()[-3000:]
    takeover = b.output()
    assert takeover.count("partitions assigned") >= 2, takeover[-3000:]  # its share, then the dead one's
    got = scored(broker.bootstrap, names["alerts"])
    missing = {e["event_id"] for e in events} - set(got)
    assert not missing, f"{len(missing)} events never scored, e.g. {sorted(missing)[:5]}"
    expected = offline_alerts(s, model_dir, data)
    caught = {e for e, v in got.items() if v > a.threshold}
    assert expected and caught == expected
    incident_of = {e["event_id"]: e["incident_id"] for e in events if e.get("label") == 1}
    incidents_caught = {incident_of[e] for e in caught if e in incident_of}
    assert incidents_caught == {incident_of[e] for e in expected if e in incident_of} and incidents_caught
