"""The whole path on the real broker: events in, alerts and dead letters out, offsets committed."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from pathlib import Path

import jsonschema
import orjson
import pytest

from detector.config import Settings
from detector.exceptions import DetectorError
from detector.jsonl import read_jsonl
from detector.kafka.factory import client_for
from detector.service.loop import Detector
from tests.helpers import wait_for
from tests.integration.kafka_io import committed, end_offsets, produce, read_all

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "detector/schemas/alert.schema.json").read_text())

BAD = [
    (b"{not json", "undecodable"),
    (b"[1,2,3]", "not_an_object"),
    (orjson.dumps({"stream_id": "s", "ts": "2026-01-05T00:00:00Z", "amount": 1}), "missing_field"),
    (
        orjson.dumps(
            {
                "event_id": "x1",
                "stream_id": "s",
                "ts": "2026-01-05T00:00:00Z",
                "amount": "12",
                "channel": "pos",
                "country": "US",
                "merchant_category": "grocery",
            }
        ),
        "wrong_type",
    ),
    (
        orjson.dumps(
            {
                "event_id": "x2",
                "stream_id": "s",
                "ts": "2126-01-05T00:00:00Z",
                "amount": 1.0,
                "channel": "pos",
                "country": "US",
                "merchant_category": "grocery",
            }
        ),
        "clock_skew",
    ),
    (b"{" + b" " * 70_000 + b"}", "oversized"),
]


def blatant_stream(n_normal: int = 12) -> list[dict[str, object]]:
    """A stream of ordinary purchases, then three absurd ones: any working model must flag those."""
    evs: list[dict[str, object]] = []
    t = 1767603600.0  # 2026-01-05 09:00 UTC
    for i in range(n_normal):
        t += 6 * 3600
        evs.append(
            {
                "event_id": f"blatant-{i}",
                "stream_id": "card-blatant",
                "ts": t,
                "amount": 25.0 + i % 3,
                "channel": "pos",
                "country": "US",
                "merchant_category": "grocery",
                "label": 0,
            }
        )
    for i in range(3):
        t += 5
        evs.append(
            {
                "event_id": f"blatant-fraud-{i}",
                "stream_id": "card-blatant",
                "ts": t,
                "amount": 9e6,
                "channel": "atm",
                "country": "ZZ",
                "merchant_category": "jewelry",
                "label": 1,
            }
        )
    return evs


def settings_for(base: Settings, broker_bootstrap: str, names: dict[str, str], model_dir: Path) -> Settings:
    data = base.model_dump()
    data["kafka"].update(
        bootstrap_servers=broker_bootstrap,
        input_topic=names["input"],
        alerts_topic=names["alerts"],
        dead_letter_topic=names["dlq"],
        verdicts_topic=names["verdicts"],
        state_topic=names["state"],
        group_id=names["group"],
        client=names["client"],
    )
    data["model"]["path"] = model_dir
    data["http"]["port"] = 0
    return Settings(**data)


def alert_everything_model(model_dir: Path, dest: Path) -> float:
    """A copy of the model whose threshold is below every score, so every scored event alerts and
    the alerts topic is the set of scored events; returns the real threshold."""
    shutil.copytree(model_dir, dest)
    meta = json.loads((dest / "metadata.json").read_text())
    threshold = float(meta["threshold"]["value"])
    meta["threshold"]["value"] = -1.0
    (dest / "metadata.json").write_text(json.dumps(meta))
    return threshold


def test_events_to_alerts_and_dead_letters(broker, names, small_settings, model_dir, test_file) -> None:  # type: ignore[no-untyped-def]
    s = settings_for(small_settings, broker.bootstrap, names, model_dir)
    lines = list(read_jsonl(test_file))
    extra = blatant_stream()
    lines += [orjson.dumps(e) for e in extra]
    records = [orjson.loads(x) for x in lines]
    app = Detector(s)
    total = len(lines) + len(BAD)
    t = threading.Thread(target=app.run, kwargs={"timeout": 300}, daemon=True)
    t.start()
    try:
        wait_for(lambda: app.ready(), 60, "partition assignment")
        port = app.http_port
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status == 200
        keyed = [(r["stream_id"].encode(), x) for r, x in zip(records, lines, strict=True)]
        produce(broker.bootstrap, names["input"], keyed)
        produce(broker.bootstrap, names["input"], [(b"bad", raw) for raw, _ in BAD])
        wait_for(lambda: app.stats.events >= total, 120, f"{total} events consumed")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    finally:
        app.stop()
        t.join(30)
    assert not t.is_alive()
    st = app.stats
    assert st.invalid == len(BAD) and st.scored + st.warming == len(lines)
    assert st.alerts > 0

    alerts = read_all(broker.bootstrap, names["alerts"], expect=st.alerts)
    assert len(alerts) == st.alerts
    by_id = {r["event_id"]: r for r in records}
    for m in alerts:
        a = orjson.loads(m.value)
        jsonschema.validate(a, SCHEMA)
        assert m.key.decode() == a["stream_id"] == by_id[a["event_id"]]["stream_id"]
    alerted = {orjson.loads(m.value)["event_id"] for m in alerts}
    assert {"blatant-fraud-0", "blatant-fraud-1", "blatant-fraud-2"} <= alerted

    dlq = read_all(broker.bootstrap, names["dlq"], expect=len(BAD))
    got = {}
    for m in dlq:
        h = {k: v.decode() for k, v in m.headers}
        assert h["source_topic"] == names["input"]
        assert int(h["source_offset"]) >= 0 and h["detail"]
        got[m.value] = h["reason"]
    assert got == {raw: reason for raw, reason in BAD}  # unchanged bytes, the right reason each

    assert committed(broker.bootstrap, names["group"], names["input"]) == end_offsets(broker.bootstrap, names["input"])
    for name in (
        "detector_events_total",
        "detector_dead_letter_total",
        "detector_alerts_total",
        "detector_anomaly_score_bucket",
        "detector_batch_duration_seconds_bucket",
        "detector_event_lag_seconds_bucket",
        "detector_consumer_lag",
        "detector_active_streams",
        "detector_state_evictions_total",
        "detector_threshold",
        "detector_model_info",
        "detector_rebalances_total",
    ):
        assert name in metrics, name
    assert 'detector_dead_letter_total{reason="oversized"} 1.0' in metrics
    # The verdicts topic was created co-partitioned with the input before the subscription, and the
    # member fetched metadata after subscribing: one assignment, no rebalance after it (kafka-python
    # rebalanced once more right after the first assignment; see KafkaSource._await_topic_metadata
    # in detector/kafka/kafka_python.py).
    admin = client_for(s.kafka).admin()
    assert admin.partition_count(names["verdicts"]) == admin.partition_count(names["input"]) == 4
    assert "detector_rebalances_total 1.0" in metrics  # the one assignment


def test_verdicts_topic_not_co_partitioned_stops_startup(broker, names, small_settings, model_dir) -> None:  # type: ignore[no-untyped-def]
    s = settings_for(small_settings, broker.bootstrap, names, model_dir)
    admin = client_for(s.kafka).admin()
    admin.ensure_topics([names["input"]], partitions=4)
    admin.ensure_topics([names["verdicts"]], partitions=1)
    wait_for(lambda: admin.partition_count(names["verdicts"]) == 1, 10, "the verdicts topic")
    with pytest.raises(DetectorError, match=r"verdicts topic .* has 1 partitions.*4.*kafka\.verdicts_topic"):
        Detector(s).run(timeout=30)


def test_reading_a_missing_topics_partitions_does_not_create_it(broker, names, small_settings, model_dir) -> None:  # type: ignore[no-untyped-def]
    # The broker auto-creates topics (deploy/kafka/broker), with its default partition count, for a
    # metadata request that names them and allows it: a count read before the daemon creates the
    # verdicts topic (detector train --topic reads it) must not leave one with the wrong count.
    admin = client_for(settings_for(small_settings, broker.bootstrap, names, model_dir).kafka).admin()
    assert admin.partition_count(names["verdicts"]) == 0
    assert admin.ensure_topics([names["verdicts"]], partitions=2) == [names["verdicts"]]  # it did not exist
    wait_for(lambda: admin.partition_count(names["verdicts"]) == 2, 10, "the topic as created")


def test_a_missing_verdicts_topic_is_not_auto_created_by_the_subscription(  # type: ignore[no-untyped-def]
    broker, names, small_settings, model_dir, caplog
) -> None:
    base = settings_for(small_settings, broker.bootstrap, names, model_dir)
    data = base.model_dump()
    data["kafka"]["create_topics"] = False
    s = Settings(**data)
    admin = client_for(s.kafka).admin()
    admin.ensure_topics([names["input"], names["alerts"], names["dlq"]])
    admin.ensure_topics([names["state"]], compacted=[names["state"]], partitions=4)
    wait_for(lambda: admin.partition_count(names["state"]) == 4, 10, "the state topic")
    app = Detector(s)
    t = threading.Thread(target=app.run, kwargs={"timeout": 120}, daemon=True)
    t.start()
    try:
        wait_for(lambda: app.ready(), 60, "partition assignment")
    finally:
        app.stop()
        t.join(30)
    assert not t.is_alive()
    assert f"verdicts topic {names['verdicts']} does not exist" in caplog.text
    assert admin.partition_count(names["verdicts"]) == 0  # left to whoever owns it
