"""The model lifecycle on the real broker, both clients: train from the topic (bad events counted,
a fraud-verdict stream left out and recorded), a challenger scored in shadow (its would-be alerts
on the shadow topic, agreement metrics), promotion that keeps the challenger's state (the first
event of each stream after it scores as the warm challenger would), and SIGKILL during shadow
scoring losing nothing for either model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import yaml

from detector.cli.main import main
from detector.config import Settings
from detector.jsonl import read_jsonl
from detector.kafka.factory import client_for
from detector.offline.evaluate import score_dataset
from detector.offline.model import load_artifact
from detector.service.checkpointing import SHADOW
from detector.service.loop import Detector
from tests.helpers import free_port, wait_for
from tests.integration.kafka_io import all_committed, produce, read_all
from tests.integration.test_pipeline import alert_everything_model, settings_for
from tests.integration.test_verdicts import verdict

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def keyed(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    return [(orjson.loads(x)["stream_id"].encode(), x) for x in lines]


def with_shadow(names: dict[str, str]) -> dict[str, str]:
    return {**names, "shadow": f"shadow-{names['input']}"}


def lifecycle_settings(
    base: Settings, bootstrap: str, names: dict[str, str], champion: Path, rival: Path | None
) -> Settings:
    d = settings_for(base, bootstrap, names, champion).model_dump()
    d["kafka"]["shadow_alerts_topic"] = names["shadow"]
    d["model"].update(shadow_path=rival, watch_seconds=0.2)
    return Settings(**d)


def offline(settings: Settings, model: Path, lines: list[bytes], tmp: Path) -> dict[str, tuple[float, bool]]:
    """event id -> (score, warming) of one uninterrupted offline run of `model` over `lines`."""
    path = tmp / f"offline-{len(lines)}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    _, ds, r = score_dataset(settings, model, path)
    return {e.event_id: (float(s), bool(w)) for e, s, w in zip(ds.events, r.score, r.warming, strict=True)}


def alerts_of(bootstrap: str, topic: str, expect: int | None = None) -> list[dict[str, object]]:
    return [orjson.loads(m.value) for m in read_all(bootstrap, topic, expect=expect)]


def test_train_from_topic_counts_bad_events_and_leaves_out_fraud_verdict_streams(  # type: ignore[no-untyped-def]
    broker, names, small_settings, train_file, tmp_path: Path
) -> None:
    s = settings_for(small_settings, broker.bootstrap, names, tmp_path / "unused")
    client_for(s.kafka).admin().ensure_topics([names["input"], names["verdicts"]])
    # Before --since: a stream that must not be read at all.
    event = {"stream_id": "card-old", "amount": 5.0, "channel": "pos", "country": "US", "merchant_category": "grocery"}
    old = [orjson.dumps({**event, "event_id": f"old-{i}", "ts": 1.7e9 + i}) for i in range(30)]
    produce(broker.bootstrap, names["input"], keyed(old))
    since = int(time.time() * 1000) + 1
    wait_for(lambda: time.time() * 1000 > since + 1, 5, "the clock to pass --since")
    lines = list(read_jsonl(train_file))
    normal = [x for x in lines if orjson.loads(x)["label"] == 0]
    fraud = [orjson.dumps({**orjson.loads(x), "stream_id": "card-flagged", "event_id": f"flag-{i}", "label": 0})
             for i, x in enumerate(normal[:40])]  # fmt: skip
    bad = [b"{not json", orjson.dumps({"stream_id": "card-x"}), b""]
    produce(broker.bootstrap, names["input"], keyed(lines + fraud) + [(b"card-bad", x) for x in bad])
    flagged = verdict({"alert_id": "v:flag-3", "stream_id": "card-flagged"}, "fraud")
    produce(broker.bootstrap, names["verdicts"], [flagged])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(s.model_dump(mode="json")))
    out = tmp_path / "from-topic"
    since_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since / 1000)) + f".{since % 1000:03d}+00:00"
    assert main(["train", "--topic", names["input"], "--since", since_iso, "--config", str(config),
                 "--out", str(out), "--epochs", "1"]) == 0  # fmt: skip
    meta = json.loads((out / "metadata.json").read_text())
    src = meta["training"]
    assert src["topic"] == names["input"]
    assert src["records_read"] == len(lines) + len(fraud) + len(bad)  # card-old lies before --since
    assert sum(src["invalid"].values()) == len(bad)
    ex = src["excluded"]
    assert ex["fraud_verdict_stream_ids"] == ["card-flagged"] and ex["fraud_verdict_events"] == len(fraud)
    labelled = {orjson.loads(x)["stream_id"] for x in lines if orjson.loads(x)["label"] != 0}
    assert ex["fraud_label_streams"] == len(labelled)
    kept = [x for x in lines if orjson.loads(x)["stream_id"] not in labelled]
    assert src["events"] == len(kept)
    # The offsets read: from the first record at or after --since to the end, on every partition.
    assert sum(end - start for start, end in src["offsets"].values()) == src["records_read"]
    assert load_artifact(out).version == meta["version"]
    # --data keeps working, and the two sources are refused together.
    assert main(["train", "--config", str(config)]) == 2
    assert main(["train", "--data", str(train_file), "--topic", names["input"], "--config", str(config)]) == 2


def test_shadow_then_promotion_keeps_the_challengers_state(  # type: ignore[no-untyped-def]
    broker, names, small_settings, model_dir, rival_dir, test_file, tmp_path: Path
) -> None:
    n = with_shadow(names)
    live, rival = tmp_path / "live", tmp_path / "rival"
    alert_everything_model(model_dir, live)
    alert_everything_model(rival_dir, rival)  # every scored event is a would-be alert: the topic shows each score
    s = lifecycle_settings(small_settings, broker.bootstrap, n, live, rival)
    v1, v2 = load_artifact(live).version, load_artifact(rival).version
    lines = list(read_jsonl(test_file))
    a, b = lines[: len(lines) // 2], lines[len(lines) // 2 :]
    app = Detector(s)
    assert app.challenger is not None and app.challenger.version == v2
    t = threading.Thread(target=app.run, kwargs={"timeout": 300}, daemon=True)
    t.start()
    try:
        wait_for(lambda: app.ready(), 90, "partition assignment")
        produce(broker.bootstrap, n["input"], keyed(a))
        warm = offline(s, rival, a, tmp_path)
        expected = {e for e, (_, w) in warm.items() if not w}
        shadow = alerts_of(broker.bootstrap, n["shadow"], expect=len(expected))
        assert {x["event_id"] for x in shadow} == expected
        assert {x["model_version"] for x in shadow} == {v2}
        for x in shadow:
            assert x["score"] == pytest.approx(warm[str(x["event_id"])][0], rel=1e-5, abs=1e-6)
        got = app.registry.get_sample_value
        wait_for(lambda: got("detector_model_alerts_total", {"version": v2, "role": "challenger"}) == len(expected),
                 30, "the challenger's alerts counted")  # fmt: skip
        both = got("detector_shadow_agreement_total", {"champion": v1, "challenger": v2, "kind": "both"})
        assert both == len(expected)  # the same warm-up, both alert on every scored event
        assert got("detector_model_alerts_total", {"version": v1, "role": "champion"}) == len(expected)

        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump(s.model_dump(mode="json")))
        assert main(["promote", "--config", str(config)]) == 0
        wait_for(lambda: app.artifact.version == v2, 60, "the promotion")
        assert app.challenger is None
        produce(broker.bootstrap, n["input"], keyed(b))
        warm = offline(s, rival, a + b, tmp_path)
        ids_b = {orjson.loads(x)["event_id"] for x in b}
        second = {e: v for e, v in warm.items() if e in ids_b}
        expected_b = {e for e, (_, w) in second.items() if not w}
        cold = offline(s, rival, b, tmp_path)
        assert expected_b != {e for e, (_, w) in cold.items() if not w}  # a cold start would differ
        every = alerts_of(broker.bootstrap, n["alerts"], expect=len(expected) + len(expected_b))
        assert len(every) == len(expected) + len(expected_b)  # the champion's of part a, then the promoted one's
        alerts = [x for x in every if x["model_version"] == v2]
        assert {x["event_id"] for x in alerts} == expected_b
        for x in alerts:  # the first event of each stream too: it scores as the warm challenger
            assert x["score"] == pytest.approx(second[str(x["event_id"])][0], rel=1e-5, abs=1e-6)
    finally:
        app.stop()
        t.join(60)

    # The promotion rewrote the promoted streams under their own ids and deleted their SHADOW keys:
    # a restart restores the new champion's state from them.
    last: dict[bytes, bytes | None] = {}
    for m in read_all(broker.bootstrap, n["state"]):
        last[m.key] = m.value
    assert [k for k, v in last.items() if k.startswith(SHADOW) and v is not None] == []
    again = Detector(s)
    t = threading.Thread(target=again.run, kwargs={"timeout": 120}, daemon=True)
    t.start()
    try:
        wait_for(lambda: again.ready(), 90, "the restart")
        assert again.challenger is None and again.artifact.version == v2
        assert len(again.table) == len({orjson.loads(x)["stream_id"] for x in lines})
    finally:
        again.stop()
        t.join(60)


def test_sigkill_during_shadow_scoring_loses_nothing_for_either_model(  # type: ignore[no-untyped-def]
    broker, names, small_settings, model_dir, rival_dir, test_file, tmp_path: Path
) -> None:
    n = with_shadow(names)
    live, rival = tmp_path / "live", tmp_path / "rival"
    alert_everything_model(model_dir, live)
    alert_everything_model(rival_dir, rival)
    cfg = lifecycle_settings(small_settings, broker.bootstrap, n, live, rival).model_dump(mode="json")
    cfg["model"]["warmup_events"] = 0  # every event is a (would-be) alert of each model
    cfg["state"]["checkpoint_interval_seconds"] = 1.0
    cfg["kafka"].update(max_poll_records=200, session_timeout_ms=6000)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    s = Settings(**cfg)
    lines = list(read_jsonl(test_file))
    produce(broker.bootstrap, n["input"], keyed(lines))

    def start(name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "DETECTOR__HTTP__PORT": str(free_port())}
        out = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen([sys.executable, "-m", "detector.cli", "run", "--config", str(path)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    for k, share in enumerate((3, 2)):  # killed twice mid-stream, then a run to the end
        p = start(f"p{k}")
        try:
            wait_for(lambda sh=share: len(read_all(broker.bootstrap, n["shadow"])) > len(lines) // sh, 120,
                     "part of the events scored in shadow")  # fmt: skip
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
    p = start("last")
    try:
        wait_for(lambda: all_committed(broker.bootstrap, n["group"], n["input"]), 180, "the last run to finish")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    logs = "\n".join((tmp_path / f"{x}.log").read_text()[-1500:] for x in ("p0", "p1", "last"))
    for model, topic in ((live, n["alerts"]), (rival, n["shadow"])):
        want = offline(s, model, lines, tmp_path)
        got = alerts_of(broker.bootstrap, topic)
        missing = set(want) - {str(x["event_id"]) for x in got}
        assert not missing, f"{topic}: {len(missing)} events never scored\n{logs}"
        # Re-scored events (the uncommitted tail) score from the restored state: as one uninterrupted run.
        for x in got:
            assert x["score"] == pytest.approx(want[str(x["event_id"])][0], rel=1e-5, abs=1e-6), (topic, x)
