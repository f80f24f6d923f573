"""The pure parts of the model lifecycle: which events each model has applied (intake), how the
challenger's alerts agree with the champion's, whole-stream sampling of training data read from a
topic, and the errors a bad `--since` or shadow folder gets."""

from __future__ import annotations

import orjson
import pytest

from detector.config import RuntimeConfig, Settings
from detector.core.features import FeatureSpec
from detector.core.state import StreamTable
from detector.exceptions import ConfigError
from detector.kafka.base import Record
from detector.lifecycle.harvest import _Sample, parse_time
from detector.service.intake import intake
from detector.service.shadow import agreement

T0 = 1.8e9


def event(stream: str, i: int) -> bytes:
    return orjson.dumps({"event_id": f"{stream}-{i}", "stream_id": stream, "ts": T0 + i, "amount": 1.0,
                         "channel": "pos", "country": "US", "merchant_category": "grocery"})  # fmt: skip


def test_an_event_is_skipped_only_once_every_model_applied_it() -> None:
    spec = FeatureSpec(Settings().features)
    champion, challenger = (StreamTable(max_streams=10, units=2, window=2, n_features=spec.n_features) for _ in "ab")
    champion.offset[champion.slots_for(["a"], T0)] = 11  # the champion's state was saved further on
    challenger.offset[challenger.slots_for(["a"], T0)] = 10
    records = [Record("events", 0, off, b"a", event("a", off), 0) for off in (9, 10, 11, 12)]
    out = intake(records, spec, RuntimeConfig(), [champion, challenger], T0)
    assert out.already_applied == 2  # offsets 9 and 10: both models hold them
    assert out.offsets.tolist() == [11, 12]
    assert out.applied[0].tolist() == [True, False] and out.applied[1].tolist() == [False, False]
    alone = intake(records, spec, RuntimeConfig(), [champion], T0)
    assert alone.offsets.tolist() == [12] and alone.applied[0].tolist() == [False]


def test_agreement_is_counted_per_input_event() -> None:
    def alerts(*where: tuple[int, int]) -> list[dict[str, object]]:
        return [{"source_partition": p, "source_offset": o} for p, o in where]

    got = agreement(alerts((0, 1), (0, 2), (1, 1)), alerts((0, 2), (1, 1), (1, 5), (2, 0)))
    assert got == {"both": 2, "champion_only": 1, "challenger_only": 2}


def test_sampling_keeps_whole_streams_within_both_caps_and_is_seeded() -> None:
    spec = FeatureSpec(Settings().features)
    evs = [spec.parse(event(f"s{k}", i)) for i in range(5) for k in range(40)]  # streams interleaved

    def sample(seed: int, streams: int, events: int) -> _Sample:
        s = _Sample(streams, events, seed)
        for e in evs:
            s.add(e)
        return s

    a = sample(1, 10, 10_000)
    assert len(a.streams) == 10 and all(len(v) == 5 for v in a.streams.values())  # never cut mid-way
    assert len(a.dropped) == 30
    assert sorted(a.streams) == sorted(sample(1, 10, 10_000).streams)  # the same seed, the same sample
    assert sorted(a.streams) != sorted(sample(2, 10, 10_000).streams)
    b = sample(1, 1000, 23)  # the event cap: whole streams of 5 events, 4 of them
    assert b.events == 20 and len(b.streams) == 4 and all(len(v) == 5 for v in b.streams.values())


def test_times_parse_or_fail_naming_the_option() -> None:
    assert parse_time("2026-11-01T00:00Z", "--since") == 1_793_491_200_000
    assert parse_time("2026-11-01T00:00", "--since") == 1_793_491_200_000  # no zone: UTC
    with pytest.raises(ConfigError, match="--until: 'yesterday' is not an ISO 8601 time"):
        parse_time("yesterday", "--until")


def test_a_shadow_folder_must_not_be_the_champions() -> None:
    with pytest.raises(ValueError, match="shadow_path: the same folder as model.path"):
        Settings(model={"path": "models/x", "shadow_path": "models/x"})


def test_exactly_once_needs_a_transaction_timeout_beyond_a_checkpoint() -> None:
    with pytest.raises(ValueError, match=r"kafka.transaction_timeout_ms \(20000\) must exceed"):
        Settings(kafka={"delivery": "exactly_once", "transaction_timeout_ms": 20_000})
    assert Settings(kafka={"delivery": "exactly_once"}).kafka.transaction_timeout_ms == 60_000
    with pytest.raises(ValueError, match="delivery"):
        Settings(kafka={"delivery": "twice"})
