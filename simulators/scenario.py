"""Scenario files: which fraud types are injected, into how many cards, and how subtly.

scenario = load_scenario("config/scenarios/default.yaml")
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from detector.config import read_mapping, validated

FraudType = Literal[
    "card_testing",
    "account_takeover",
    "velocity",
    "impossible_travel",
    "dormant_reactivation",
    "drift",
    "interleaved_cnp",
    "merchant_spree",
    "amount_doubling",
]
# The first six are the training world's; the last three exist only in shifted worlds
# (config/scenarios/shifted.yaml): card-not-present purchases abroad interleaved with the owner's
# own shopping at home, new online merchants in the card's usual categories, amounts that double.
# The order is the simulator's (a fraud type's index is its code): it follows the Literal above.
FRAUD_TYPES: tuple[FraudType, ...] = get_args(FraudType)
BASE_TYPES = FRAUD_TYPES[:6]


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    # Share of cards that suffer one incident during the simulated period.
    fraud_share: float = Field(0.02, ge=0, le=1)
    # Relative weight of each fraud type among incidents (missing types get weight 0).
    mix: dict[FraudType, float] = Field(default_factory=lambda: {t: 1.0 for t in BASE_TYPES})
    # 0 = blatant, 1 = fraud imitates the card's own profile (amounts, country, channel) closely.
    subtlety: float = Field(0.3, ge=0, le=1)
    # Share of cards with honest noise: a week abroad, a one-off large purchase.
    travel_share: float = Field(0.05, ge=0, le=1)
    large_purchase_share: float = Field(0.2, ge=0, le=1)
    # A world shifted from the training one: every amount times this (another currency's scale),
    # home countries drawn from these codes only (empty: the usual mix), arrival rates times this,
    # and this share of cards that use ATMs honestly (cash withdrawals in their normal traffic).
    amount_scale: float = Field(1.0, gt=0, le=1e4)
    home_countries: tuple[str, ...] = ()
    rate_scale: float = Field(1.0, gt=0, le=100)
    atm_share: float = Field(0.0, ge=0, le=1)

    @field_validator("home_countries")
    @classmethod
    def _known_countries(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from simulators.world import COUNTRY_CODES

        unknown = sorted(set(v) - set(COUNTRY_CODES))
        if unknown:
            raise ValueError(f"unknown country codes {', '.join(unknown)} (known: {', '.join(COUNTRY_CODES)})")
        return v


def load_scenario(path: str | Path | None) -> Scenario:
    """The scenario in a YAML file (defaults without one); ConfigError with one line naming the
    file or the first bad key."""
    if path is None:
        return Scenario()
    return validated(Scenario, read_mapping(path, "scenario"), "scenario")
