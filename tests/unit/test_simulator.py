from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import orjson

from detector.jsonl import write_jsonl
from simulators.cards import DAY, HOUR, simulate_cards
from simulators.output import card_records
from simulators.scenario import FRAUD_TYPES, Scenario

ALL = Scenario(fraud_share=0.3, mix={t: 1.0 for t in FRAUD_TYPES})


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_jsonl(card_records(simulate_cards(50, 10, ALL, seed)), str(tmp_path / f"{name}.jsonl.gz"))
    assert digest(tmp_path / "a.jsonl.gz") == digest(tmp_path / "b.jsonl.gz")
    assert digest(tmp_path / "a.jsonl.gz") != digest(tmp_path / "c.jsonl.gz")


def test_events_have_the_documented_fields_and_fraud_is_labelled() -> None:
    recs = list(card_records(simulate_cards(200, 20, ALL, 3)))
    assert len({r["event_id"] for r in recs}) == len(recs)
    fields = {
        "event_id",
        "stream_id",
        "ts",
        "amount",
        "currency",
        "merchant_id",
        "merchant_category",
        "country",
        "channel",
        "label",
        "fraud_type",
        "incident_id",
    }
    assert all(set(r) == fields for r in recs)
    fraud = [r for r in recs if r["label"] == 1]
    assert fraud and all(r["fraud_type"] in FRAUD_TYPES and r["incident_id"] for r in fraud)
    assert all(r["fraud_type"] is None and r["incident_id"] is None for r in recs if r["label"] == 0)
    assert [r["ts"] for r in recs] == sorted(r["ts"] for r in recs)
    orjson.dumps(recs)  # JSON-serialisable as is


def test_per_card_amount_scales_differ() -> None:
    c = simulate_cards(300, 30, Scenario(fraud_share=0), 4)
    med = [np.median(c["amount"][c["card"] == k]) for k in range(300) if (c["card"] == k).sum() > 20]
    assert np.percentile(med, 90) / np.percentile(med, 10) > 2


def test_arrivals_follow_active_hours() -> None:
    c = simulate_cards(500, 30, Scenario(fraud_share=0), 5)
    hours = ((c["t"] % DAY) // HOUR).astype(int)
    counts = np.bincount(hours, minlength=24)
    assert counts[10:16].sum() > 3 * counts[2:8].sum()  # most cards are day people


def test_card_testing_changes_amount_and_channel_only_for_its_incident() -> None:
    c = simulate_cards(400, 30, Scenario(fraud_share=0.5, mix={"card_testing": 1.0}), 6)
    fraud = c["label"] == 1
    assert fraud.any()
    assert np.median(c["amount"][fraud]) < 3.0 < np.median(c["amount"][~fraud])
    assert np.all(c["channel"][fraud] == 1)  # ecom
    assert set(np.unique(c["incident"][fraud])) == set(np.unique(c["incident"][c["incident"] >= 0]))


def test_account_takeover_moves_country_and_raises_amounts() -> None:
    s = Scenario(fraud_share=0.5, mix={"account_takeover": 1.0}, subtlety=0.0)
    c = simulate_cards(300, 30, s, 7)
    fraud = c["label"] == 1
    homes = {
        int(k): int(np.bincount(c["country"][(c["card"] == k) & ~fraud]).argmax()) for k in np.unique(c["card"][fraud])
    }
    abroad = np.mean([c["country"][i] != homes[int(c["card"][i])] for i in np.flatnonzero(fraud)])
    assert abroad == 1.0
    assert np.median(c["amount"][fraud]) > 5 * np.median(c["amount"][~fraud])


def _scenario(ftype: str, subtlety: float = 0.0) -> dict[str, np.ndarray]:
    return simulate_cards(400, 40, Scenario(fraud_share=0.4, mix={ftype: 1.0}, subtlety=subtlety), 9)


def _gaps(c: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Seconds since the same card's previous event, for the given rows."""
    out = []
    for i in np.flatnonzero(rows):
        prev = np.flatnonzero((c["card"] == c["card"][i]) & (c["t"] < c["t"][i]))
        out.append(c["t"][i] - c["t"][prev[-1]] if len(prev) else np.inf)
    return np.array(out)


def test_velocity_packs_many_events_into_an_hour() -> None:
    c = _scenario("velocity")
    fraud = c["label"] == 1
    assert np.median(_gaps(c, fraud)) < 600 < np.median(_gaps(c, ~fraud & (c["card"] < 50)))


def test_impossible_travel_is_far_from_home_within_an_hour() -> None:
    from simulators.world import distance_km

    c = _scenario("impossible_travel")
    fraud = c["label"] == 1
    for inc in np.unique(c["incident"][fraud]):
        rows = c["incident"] == inc
        card = c["card"][rows][0]
        home = int(np.bincount(c["country"][(c["card"] == card) & ~fraud]).argmax())
        assert distance_km(home, int(c["country"][rows][0])) >= 5000
        assert np.ptp(c["t"][rows]) <= 3600


def test_dormant_reactivation_follows_a_silence() -> None:
    c = _scenario("dormant_reactivation")
    fraud = c["label"] == 1
    firsts = [np.flatnonzero(c["incident"] == inc)[0] for inc in np.unique(c["incident"][fraud])]
    gaps = _gaps(c, np.isin(np.arange(len(c["t"])), firsts))
    assert np.median(gaps) > 7 * DAY


def test_drift_amounts_creep_up() -> None:
    c = _scenario("drift")
    fraud = c["label"] == 1
    for inc in np.unique(c["incident"][fraud]):
        a = c["amount"][c["incident"] == inc]
        assert a[-1] > a[0] and np.ptp(c["t"][c["incident"] == inc]) > DAY


def test_hard_scenario_stays_closer_to_the_profile_than_easy() -> None:
    easy, hard = _scenario("account_takeover", 0.0), _scenario("account_takeover", 0.9)
    ratio = lambda c: np.median(c["amount"][c["label"] == 1]) / np.median(c["amount"][c["label"] == 0])  # noqa: E731
    assert ratio(hard) < ratio(easy) / 2
