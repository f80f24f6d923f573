"""`detector simulate`: pick a domain, generate, write JSON lines."""

from __future__ import annotations

from detector.jsonl import write_jsonl
from simulators.cards import simulate_cards
from simulators.metrics import metric_records, simulate_metrics
from simulators.output import card_records
from simulators.scenario import load_scenario
from simulators.sensors import sensor_records, simulate_sensors


def simulate(domain: str, streams: int, days: int, scenario: str | None, seed: int, out: str) -> int:
    if domain == "cards":
        cols = simulate_cards(streams, days, load_scenario(scenario), seed)
        return write_jsonl(card_records(cols), out)
    if domain == "sensors":
        # The scenario's fraud_share is the share of machines with a fault.
        share = load_scenario(scenario).fraud_share if scenario else 0.1
        return write_jsonl(sensor_records(simulate_sensors(streams, days, share, seed)), out)
    if domain == "metrics":
        # The scenario's fraud_share is the share of series with anomalies (default: all of them).
        share = load_scenario(scenario).fraud_share if scenario else 1.0
        return write_jsonl(metric_records(simulate_metrics(streams, days, share, seed)), out)
    raise ValueError(f"unknown domain {domain!r}")
