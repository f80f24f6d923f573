"""Fixed reference data of the card world: countries, currencies, merchant categories."""

from __future__ import annotations

import numpy as np

# (code, currency, latitude, longitude, weight as a home country)
COUNTRIES: tuple[tuple[str, str, float, float, float], ...] = (
    ("US", "USD", 38, -97, 30),
    ("GB", "GBP", 54, -2, 12),
    ("DE", "EUR", 51, 10, 12),
    ("FR", "EUR", 46, 2, 10),
    ("ES", "EUR", 40, -4, 6),
    ("IT", "EUR", 42, 12, 6),
    ("NL", "EUR", 52, 5, 4),
    ("PL", "PLN", 52, 19, 4),
    ("SE", "SEK", 62, 15, 3),
    ("CA", "CAD", 56, -106, 6),
    ("MX", "MXN", 23, -102, 2),
    ("BR", "BRL", -14, -51, 2),
    ("JP", "JPY", 36, 138, 1),
    ("IN", "INR", 20, 77, 1),
    ("AU", "AUD", -25, 133, 1),
    ("ZA", "ZAR", -30, 25, 0),
    ("NG", "NGN", 9, 8, 0),
    ("RU", "RUB", 61, 105, 0),
    ("CN", "CNY", 35, 104, 0),
    ("AE", "AED", 24, 54, 0),
)
COUNTRY_CODES = tuple(c[0] for c in COUNTRIES)
CURRENCIES = tuple(c[1] for c in COUNTRIES)
HOME_WEIGHTS = np.array([c[4] for c in COUNTRIES], dtype=float) / sum(c[4] for c in COUNTRIES)
_LAT = np.radians([c[2] for c in COUNTRIES])
_LON = np.radians([c[3] for c in COUNTRIES])

# (category, amount multiplier of the card's scale, ecom share, everyday?)
CATEGORIES: tuple[tuple[str, float, float, bool], ...] = (
    ("grocery", 1.0, 0.05, True),
    ("restaurant", 0.8, 0.05, True),
    ("fuel", 1.2, 0.0, True),
    ("transport", 0.4, 0.3, True),
    ("retail", 1.5, 0.2, True),
    ("online_retail", 1.3, 1.0, True),
    ("entertainment", 0.8, 0.4, True),
    ("health", 1.2, 0.1, True),
    ("utilities", 2.0, 0.9, True),
    ("cash", 2.0, 0.0, False),
    ("electronics", 4.0, 0.5, False),
    ("travel", 6.0, 0.7, False),
    ("jewelry", 8.0, 0.3, False),
    ("gaming", 0.5, 1.0, False),
    ("digital_goods", 0.3, 1.0, False),
)
CATEGORY_NAMES = tuple(c[0] for c in CATEGORIES)
CATEGORY_MULT = np.array([c[1] for c in CATEGORIES])
CATEGORY_ECOM = np.array([c[2] for c in CATEGORIES])
EVERYDAY = np.array([i for i, c in enumerate(CATEGORIES) if c[3]])
CAT = {name: i for i, name in enumerate(CATEGORY_NAMES)}
CHANNELS = ("pos", "ecom", "atm")


def distance_km(a: int, b: int) -> float:
    """Great-circle distance between two countries' centres."""
    d = np.sin((_LAT[b] - _LAT[a]) / 2) ** 2 + np.cos(_LAT[a]) * np.cos(_LAT[b]) * np.sin((_LON[b] - _LON[a]) / 2) ** 2
    return float(6371 * 2 * np.arcsin(np.sqrt(d)))


def far_country(home: int, rng: np.random.Generator, min_km: float = 3000) -> int:
    """A country at least min_km from home (every country has one in this table)."""
    far = [i for i in range(len(COUNTRIES)) if distance_km(home, i) >= min_km]
    return int(rng.choice(far))


def near_country(home: int, rng: np.random.Generator, max_km: float = 2500) -> int:
    """A foreign country within max_km of home, or any other country if none is that close."""
    near = [i for i in range(len(COUNTRIES)) if i != home and distance_km(home, i) <= max_km]
    pool = near or [i for i in range(len(COUNTRIES)) if i != home]
    return int(rng.choice(pool))
