"""Verdicts on the real broker, both clients: a legit verdict quiets its stream, a fraud verdict
marks it, bad verdicts go to the dead-letter topic with their reasons, and the daemon counts them."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from detector.service.loop import Detector
from tests.helpers import wait_for
from tests.integration.kafka_io import produce, read_all
from tests.integration.test_pipeline import alert_everything_model, settings_for

pytestmark = pytest.mark.integration


def events(stream: str, n: int, start: int) -> list[tuple[bytes, bytes]]:
    now = time.time()
    return [
        (
            stream.encode(),
            orjson.dumps({"event_id": f"{stream}-{start + i}", "stream_id": stream, "ts": now + i * 0.001,
                          "amount": 20.0, "channel": "pos", "country": "US", "merchant_category": "grocery"}),
        )
        for i in range(n)
    ]  # fmt: skip


def verdict(alert: dict[str, object], kind: str) -> tuple[bytes, bytes]:
    v = {"alert_id": alert["alert_id"], "stream_id": alert["stream_id"], "verdict": kind, "analyst": "ana",
         "note": "test", "decided_at": datetime.now(UTC).isoformat()}  # fmt: skip
    return str(alert["stream_id"]).encode(), orjson.dumps(v)


def test_verdicts_quiet_mark_and_dead_letter(broker, names, small_settings, model_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Every event alerts with this copy of the model (threshold below every score): a stream keeps
    # alerting unless a verdict quiets it.
    alert_everything_model(model_dir, tmp_path / "m")
    s = settings_for(small_settings, broker.bootstrap, names, tmp_path / "m")
    d = s.model_dump()
    d["model"]["warmup_events"] = 0
    s = type(s)(**d)
    app = Detector(s)
    t = threading.Thread(target=app.run, kwargs={"timeout": 300}, daemon=True)
    t.start()
    got = app.registry.get_sample_value
    try:
        wait_for(lambda: app.ready(), 90, "partition assignment")
        produce(broker.bootstrap, names["input"], events("card-l", 3, 0) + events("card-f", 3, 0))
        first = [orjson.loads(m.value) for m in read_all(broker.bootstrap, names["alerts"], expect=6)]
        assert len(first) == 6  # every event alerted
        by_stream = {a["stream_id"]: a for a in first}
        a_l, a_f = by_stream["card-l"], by_stream["card-f"]
        assert isinstance(a_l["source_partition"], int) and isinstance(a_l["source_offset"], int)
        produce(
            broker.bootstrap,
            names["verdicts"],
            [
                verdict(a_l, "legit"),
                verdict(a_f, "fraud"),
                (b"card-l", b"{not a verdict"),
                verdict({"alert_id": "v:e", "stream_id": "card-nobody"}, "legit"),
                verdict({"alert_id": "v:never", "stream_id": "card-l"}, "fraud"),
            ],
        )

        def counted(kind: str) -> float:
            return sum(got("detector_verdicts_total", {"verdict": kind, "severity": s}) or 0.0
                       for s in ("warning", "critical"))  # fmt: skip

        wait_for(lambda: counted("fraud") == 1 and counted("legit") == 1, 60, "both verdicts counted")
        assert got("detector_alert_precision") == 0.5
        produce(broker.bootstrap, names["input"], events("card-l", 3, 10) + events("card-f", 2, 10))
        second = [orjson.loads(m.value) for m in read_all(broker.bootstrap, names["alerts"], expect=8)]
        dlq = read_all(broker.bootstrap, names["dlq"], expect=3)
    finally:
        app.stop()
        t.join(60)
    assert not t.is_alive()
    seen = {a["alert_id"] for a in first}
    later = [a for a in second if a["alert_id"] not in seen]
    # card-l's ordinary events after the legit verdict are quiet; card-f's carry the fraud mark.
    assert {a["stream_id"] for a in later} == {"card-f"} and len(later) == 2, later
    assert all(a["confirmed_stream"] is True for a in later)
    reasons = sorted(dict((k, v.decode()) for k, v in m.headers)["reason"] for m in dlq)
    assert reasons == ["bad_verdict", "unknown_alert", "unknown_stream"]
    assert all(dict(m.headers)["source_topic"].decode() == names["verdicts"] for m in dlq)
    assert app.stats.invalid == 0  # verdicts are not events
