"""Analysts' verdicts: parsing, their effect on a stream, the alert policy that follows them, and
the daemon's verdict metrics (detector.core.feedback, detector.service.feedback)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from detector.config import FeedbackConfig, RuntimeConfig, Settings
from detector.core.alerts import AlertPolicy
from detector.core.explain import Explainer
from detector.core.features import FeatureSpec
from detector.core.feedback import ALERT_MEMORY, apply_verdict, parse_verdict, remember_alerts
from detector.core.scoring import BatchScores
from detector.core.state import StreamTable
from detector.core.threshold import Threshold
from detector.exceptions import InvalidEvent
from detector.kafka.base import Record
from detector.service.feedback import Feedback
from detector.service.intake import intake
from detector.service.metrics import Metrics

T0 = 1.8e9


def verdict(**kw: object) -> bytes:
    d = {
        "alert_id": "v1:e1",
        "stream_id": "card-1",
        "verdict": "legit",
        "analyst": "ana",
        "note": "known traveller",
        "decided_at": "2027-01-15T08:00:00Z",
    }
    d.update(kw)
    return orjson.dumps({k: v for k, v in d.items() if v is not None})


def table_with(stream: str = "card-1", alert_ids: tuple[str, ...] = ("v1:e1",)) -> tuple[StreamTable, int]:
    t = StreamTable(max_streams=10, units=2, window=2, n_features=3)
    slot = int(t.slots_for([stream], now=0.0)[0])
    remember_alerts(t, [slot] * len(alert_ids), list(alert_ids))
    t.evidence[slot] = 42.0
    return t, slot


def test_a_well_formed_verdict_parses() -> None:
    v = parse_verdict(verdict(), 65536)
    assert (v.alert_id, v.stream_id, v.verdict, v.analyst, v.note) == (
        "v1:e1",
        "card-1",
        "legit",
        "ana",
        "known traveller",
    )
    assert v.decided_at == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1]",
        verdict(verdict="maybe"),
        verdict(alert_id=None),
        verdict(stream_id=""),
        verdict(analyst=7),
        verdict(decided_at="2027-01-15T08:00:00"),  # no zone
        verdict(decided_at="yesterday"),
        b"{" + b" " * 70_000 + b"}",
    ],
)
def test_a_malformed_verdict_is_refused_with_the_reason_bad_verdict(raw: bytes) -> None:
    with pytest.raises(InvalidEvent) as e:
        parse_verdict(raw, 65536)
    assert e.value.reason == "bad_verdict" and e.value.detail


def test_legit_resets_the_evidence_and_quiets_the_stream_once() -> None:
    t, slot = table_with()
    v = parse_verdict(verdict(), 65536)
    assert apply_verdict(t, v, offset=5, quiet_seconds=3600) is None
    assert t.evidence[slot] == 0.0 and t.quiet_until[slot] == v.decided_at + 3600 and t.dirty[slot]
    t.evidence[slot] = 3.0
    assert apply_verdict(t, v, offset=5, quiet_seconds=3600) == "already_applied"  # a replay
    assert t.evidence[slot] == 3.0


def test_fraud_marks_the_stream_and_ends_a_quiet_spell() -> None:
    t, slot = table_with()
    apply_verdict(t, parse_verdict(verdict(), 65536), 1, 3600)
    assert apply_verdict(t, parse_verdict(verdict(verdict="fraud"), 65536), 2, 3600) is None
    assert t.confirmed[slot] and t.quiet_until[slot] == 0.0


def test_verdicts_for_unknown_streams_or_alerts_are_refused() -> None:
    t, slot = table_with(alert_ids=tuple(f"v1:e{i}" for i in range(ALERT_MEMORY + 1)))
    assert apply_verdict(t, parse_verdict(verdict(stream_id="card-9"), 65536), 1, 60) == "unknown_stream"
    # The stream remembers its last ALERT_MEMORY alerts: the first one has left the ring.
    assert apply_verdict(t, parse_verdict(verdict(alert_id="v1:e0"), 65536), 1, 60) == "unknown_alert"
    assert apply_verdict(t, parse_verdict(verdict(alert_id=f"v1:e{ALERT_MEMORY}"), 65536), 1, 60) is None


def test_a_quiet_stream_alerts_only_at_the_critical_level_and_a_confirmed_one_says_so() -> None:
    spec = FeatureSpec(Settings().features)
    policy = AlertPolicy(Threshold(1.0, 5.0, "quantile", 1e-4, 100), "v1", Explainer(spec))
    events = [spec.parse(orjson.dumps({"event_id": f"e{i}", "stream_id": "c", "ts": T0 + i, "amount": 1.0,
                                        "channel": "pos", "country": "US", "merchant_category": "grocery"}))
              for i in range(3)]  # fmt: skip
    f = np.zeros((3, spec.n_features), np.float32)
    scores = BatchScores(np.array([2.0, 6.0, 2.0]), np.zeros(3, bool), f, f, f, np.zeros(3, np.int64), f[:, 0])
    quiet = np.array([T0 + 10, T0 + 10, 0.0])
    confirmed = np.array([False, False, True])
    out = policy.alerts_for(events, scores, T0, quiet, confirmed, (np.array([3, 3, 3]), np.array([7, 8, 9])))
    assert [a["event_id"] for a in out] == ["e1", "e2"]  # e0: quiet and below critical
    assert policy.suppressed_total == 1
    assert "confirmed_stream" not in out[0] and out[1]["confirmed_stream"] is True
    assert (out[1]["source_partition"], out[1]["source_offset"]) == (3, 9)


def test_intake_keeps_verdicts_apart_from_events() -> None:
    spec = FeatureSpec(Settings().features)
    t = StreamTable(max_streams=10, units=2, window=2, n_features=spec.n_features)
    records = [
        Record("alerts.verdicts", 0, 1, b"card-1", verdict(), 0),
        Record("alerts.verdicts", 0, 2, b"card-1", b"nope", 0),
        Record("events", 0, 5, b"card-1", b"{not json", 0),
    ]
    out = intake(records, spec, RuntimeConfig(), [t], T0, "alerts.verdicts")
    assert out.verdict_records == 2 and len(out.verdicts) == 1 and out.verdicts[0][1].verdict == "legit"
    assert [e.reason for _, e in out.bad_verdicts] == ["bad_verdict"]
    assert [e.reason for _, e in out.dead] == ["undecodable"] and out.events == []


def test_verdict_metrics_count_by_severity_and_follow_precision() -> None:
    reg = CollectorRegistry()
    fb = Feedback(Metrics.create(reg), FeedbackConfig(precision_window=3))
    t, slot = table_with(alert_ids=())
    alerts = [{"alert_id": f"v1:e{i}", "stream_id": "card-1", "severity": "critical" if i == 0 else "warning",
               "detected_at": "2027-01-15T07:59:00.000Z"} for i in range(4)]  # fmt: skip
    fb.raised(t, alerts)
    assert t.alerts_raised[slot] == 4
    kinds = ["fraud", "legit", "legit", "legit"]
    batch = [(Record("v", 0, i, None, b"", 0), parse_verdict(verdict(alert_id=f"v1:e{i}", verdict=k), 65536))
             for i, k in enumerate(kinds)]  # fmt: skip
    batch.append((Record("v", 0, 9, None, b"", 0), parse_verdict(verdict(stream_id="gone"), 65536)))
    dead = fb.apply(t, batch)
    assert [e.reason for _, e in dead] == ["unknown_stream"]
    get = reg.get_sample_value
    assert get("detector_verdicts_total", {"verdict": "fraud", "severity": "critical"}) == 1.0
    assert get("detector_verdicts_total", {"verdict": "legit", "severity": "warning"}) == 3.0
    assert get("detector_alert_precision") == 0.0  # the window holds the last 3: all legit
    assert get("detector_verdict_delay_seconds_count") == 4.0
    assert get("detector_verdict_delay_seconds_sum") == pytest.approx(4 * 60.0)


def test_the_verdict_schema_accepts_what_the_daemon_parses() -> None:
    import json
    from pathlib import Path

    import jsonschema

    schema = json.loads((Path(__file__).parents[2] / "detector/schemas/verdict.schema.json").read_text())
    jsonschema.validate(orjson.loads(verdict()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(orjson.loads(verdict(verdict="maybe")), schema)
