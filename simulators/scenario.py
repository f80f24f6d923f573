"""Scenario files: which fraud types are injected, into how many cards, and how subtly.

scenario = load_scenario("config/scenarios/default.yaml")
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from detector.config import read_mapping, validated

FraudType = Literal[
    "card_testing", "account_takeover", "velocity", "impossible_travel", "dormant_reactivation", "drift"
]
FRAUD_TYPES: tuple[FraudType, ...] = (
    "card_testing",
    "account_takeover",
    "velocity",
    "impossible_travel",
    "dormant_reactivation",
    "drift",
)


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    # Share of cards that suffer one incident during the simulated period.
    fraud_share: float = Field(0.02, ge=0, le=1)
    # Relative weight of each fraud type among incidents (missing types get weight 0).
    mix: dict[FraudType, float] = Field(default_factory=lambda: {t: 1.0 for t in FRAUD_TYPES})
    # 0 = blatant, 1 = fraud imitates the card's own profile (amounts, country, channel) closely.
    subtlety: float = Field(0.3, ge=0, le=1)
    # Share of cards with honest noise: a week abroad, a one-off large purchase.
    travel_share: float = Field(0.05, ge=0, le=1)
    large_purchase_share: float = Field(0.2, ge=0, le=1)


def load_scenario(path: str | Path | None) -> Scenario:
    """The scenario in a YAML file (defaults without one); ConfigError with one line naming the
    file or the first bad key."""
    if path is None:
        return Scenario()
    return validated(Scenario, read_mapping(path, "scenario"), "scenario")
