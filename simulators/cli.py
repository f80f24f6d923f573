"""`detector simulate`: pick a domain, generate, write JSON lines."""

from __future__ import annotations

from simulators.cards import simulate_cards
from simulators.output import card_records, write_jsonl
from simulators.scenario import load_scenario


def simulate(domain: str, streams: int, days: int, scenario: str | None, seed: int, out: str) -> int:
    if domain == "cards":
        cols = simulate_cards(streams, days, load_scenario(scenario), seed)
        return write_jsonl(card_records(cols), out)
    raise ValueError(f"unknown domain {domain!r}")
