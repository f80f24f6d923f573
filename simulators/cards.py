"""Card-transaction world: per-card profiles, honest noise, and injected fraud incidents.

    events = simulate_cards(streams=1000, days=30, scenario=Scenario(), seed=1)   # columns
    write_jsonl(events_to_records(events), "cards.jsonl")

Every card draws its own profile from the seed (home country, spend rate, amount scale, usual
merchant categories and merchants, day or night person, weekend factor). Arrivals are Poisson
with an hour-of-day and weekend modulated rate. Fraud incidents are injected into
`scenario.fraud_share` of the cards at a random time in the second part of the period, so the
detector has seen the card's normal behaviour first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulators import world as w
from simulators.scenario import FRAUD_TYPES, Scenario

DAY = 86400.0
HOUR = 3600.0
COLUMNS = ("t", "card", "amount", "cat", "merchant", "country", "channel", "label", "ftype", "incident")


@dataclass(frozen=True)
class Profile:
    home: int
    rate_per_day: float
    peak_hour: float
    weekend_factor: float
    mu: float  # log amount scale
    sigma: float
    cats: np.ndarray  # usual categories
    cat_weights: np.ndarray
    merchants: np.ndarray  # (len(cats), 3) usual merchant ids per usual category
    ecom_bias: float


def draw_profile(rng: np.random.Generator, homes: np.ndarray | None = None, rate_scale: float = 1.0) -> Profile:
    """A card's profile; `homes` (weights over countries) and `rate_scale` shift the world."""
    cats = rng.choice(w.EVERYDAY, size=4, replace=False)
    night = rng.random() < 0.15
    return Profile(
        home=int(rng.choice(len(w.COUNTRIES), p=w.HOME_WEIGHTS if homes is None else homes)),
        rate_per_day=float(rng.lognormal(np.log(2.5), 0.5)) * rate_scale,
        peak_hour=float(rng.normal(22.0 if night else 13.0, 1.5)),
        weekend_factor=float(rng.lognormal(0.0, 0.35)),
        mu=float(np.log(rng.lognormal(np.log(30.0), 0.6))),
        sigma=float(rng.uniform(0.35, 0.7)),
        cats=cats,
        cat_weights=rng.dirichlet(np.full(4, 1.5)),
        merchants=cats[:, None] * 10_000 + rng.integers(0, 2000, size=(4, 3)),
        ecom_bias=float(rng.beta(2, 5)),
    )


def hourly_intensity(p: Profile, days: int) -> np.ndarray:
    """Expected events in each hour of the period (day/night rhythm, weekend factor)."""
    hours = np.arange(days * 24)
    day_shape = np.exp(1.6 * np.cos(2 * np.pi * (np.arange(24) - p.peak_hour) / 24))
    day_shape = day_shape / day_shape.sum() + 0.005  # a floor: people do buy at 4 am sometimes
    day_shape /= day_shape.sum()
    weekend = ((hours // 24) % 7) >= 5  # period starts on a Monday
    return p.rate_per_day * day_shape[hours % 24] * np.where(weekend, p.weekend_factor, 1.0)


def _cols(n: int) -> dict[str, np.ndarray]:
    return {
        "t": np.zeros(n),
        "card": np.zeros(n, np.int64),
        "amount": np.zeros(n),
        "cat": np.zeros(n, np.int64),
        "merchant": np.zeros(n, np.int64),
        "country": np.zeros(n, np.int64),
        "channel": np.zeros(n, np.int64),
        "label": np.zeros(n, np.int64),
        "ftype": np.full(n, -1, np.int64),
        "incident": np.full(n, -1, np.int64),
    }


def _channel(cat: np.ndarray, bias: float, rng: np.random.Generator) -> np.ndarray:
    ecom = rng.random(cat.shape) < np.clip(w.CATEGORY_ECOM[cat] + bias * 0.3, 0, 1)
    ch = np.where(ecom, 1, 0)
    return np.where(cat == w.CAT["cash"], 2, ch)


def normal_events(card: int, p: Profile, days: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    counts = rng.poisson(hourly_intensity(p, days))
    n = int(counts.sum())
    c = _cols(n)
    c["t"] = np.repeat(np.arange(days * 24) * HOUR, counts) + rng.random(n) * HOUR
    c["card"][:] = card
    k = rng.choice(4, size=n, p=p.cat_weights)
    c["cat"] = p.cats[k]
    usual = rng.random(n) < 0.85
    c["merchant"] = np.where(usual, p.merchants[k, rng.integers(0, 3, n)], c["cat"] * 10_000 + rng.integers(0, 2000, n))
    c["amount"] = np.exp(p.mu + p.sigma * rng.standard_normal(n)) * w.CATEGORY_MULT[c["cat"]]
    c["country"][:] = p.home
    c["channel"] = _channel(c["cat"], p.ecom_bias, rng)
    return c


def add_travel(c: dict[str, np.ndarray], p: Profile, days: int, rng: np.random.Generator) -> None:
    """A week abroad, announced by a travel booking and shifting gradually over the first day."""
    if days < 10 or len(c["t"]) == 0:
        return
    start = rng.uniform(2, days - 8) * DAY
    length = rng.uniform(5, 8) * DAY
    dest = w.near_country(p.home, rng)
    t = c["t"]
    inside = (t >= start) & (t < start + length)
    ramp = np.clip((t - start) / DAY, 0.3, 1.0)  # first day: some purchases still at home
    abroad = inside & (rng.random(len(t)) < ramp)
    c["country"][abroad] = dest
    before = np.flatnonzero(t < start)
    if len(before):  # the booking, a few days before
        i = before[-1]
        c["cat"][i] = w.CAT["travel"]
        c["channel"][i] = 1
        c["amount"][i] = np.exp(p.mu) * w.CATEGORY_MULT[w.CAT["travel"]]


def add_atm_use(c: dict[str, np.ndarray], p: Profile, rng: np.random.Generator) -> None:
    """Honest cash withdrawals: about 6% of the card's events become ATM withdrawals at home."""
    atm = rng.random(len(c["t"])) < 0.06
    c["cat"][atm] = w.CAT["cash"]
    c["channel"][atm] = 2
    c["merchant"][atm] = w.CAT["cash"] * 10_000 + rng.integers(0, 50, int(atm.sum()))
    c["amount"][atm] = np.round(rng.choice([20, 50, 100, 200], int(atm.sum())) * np.exp(p.mu) / 30.0 + 0.0)


def add_large_purchase(c: dict[str, np.ndarray], p: Profile, rng: np.random.Generator) -> None:
    if len(c["t"]) == 0:
        return
    i = int(rng.integers(len(c["t"])))
    c["amount"][i] *= rng.uniform(4, 8)


def fraud_events(
    ftype: str, card: int, incident: int, p: Profile, start: float, subtle: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The fraudulent events of one incident; `subtle` in [0, 1] pulls them towards the profile."""
    loud = 1.0 - subtle
    scale = np.exp(p.mu)
    home_or = lambda away: p.home if rng.random() < subtle else away  # noqa: E731
    if ftype == "card_testing":
        n = int(rng.integers(5, 16))
        t = start + np.sort(rng.uniform(0, 600, n))
        amount = rng.uniform(0.5, 3.0, n)
        cat = np.full(n, w.CAT["digital_goods"])
        country = np.full(n, home_or(w.near_country(p.home, rng)))
        channel = np.ones(n, np.int64)
    elif ftype == "account_takeover":
        n = int(rng.integers(3, 9))
        t = start + np.sort(rng.uniform(0, rng.uniform(1, 6) * HOUR, n))
        cat = rng.choice([w.CAT["electronics"], w.CAT["jewelry"], w.CAT["cash"]], n)
        amount = scale * (1.5 + 8 * loud) * w.CATEGORY_MULT[cat] * rng.lognormal(0, 0.3, n)
        country = np.full(n, home_or(w.far_country(p.home, rng)))
        channel = np.where(cat == w.CAT["cash"], 2, 1)
    elif ftype == "velocity":
        n = int(rng.integers(10, 26))
        t = start + np.sort(rng.uniform(0, HOUR, n))
        cat = p.cats[rng.choice(4, n, p=p.cat_weights)]
        amount = np.exp(p.mu + p.sigma * rng.standard_normal(n)) * w.CATEGORY_MULT[cat] * (1 + 2 * loud)
        country = np.full(n, p.home)
        channel = _channel(cat, p.ecom_bias, rng)
    elif ftype == "impossible_travel":
        n = int(rng.integers(2, 5))
        t = start + np.sort(rng.uniform(0, HOUR, n))
        cat = rng.choice(w.EVERYDAY, n)
        amount = scale * w.CATEGORY_MULT[cat] * (1 + 3 * loud) * rng.lognormal(0, 0.3, n)
        country = np.full(n, w.far_country(p.home, rng, min_km=5000))
        channel = np.zeros(n, np.int64)
    elif ftype == "dormant_reactivation":
        n = int(rng.integers(3, 7))
        t = start + np.sort(rng.uniform(0, DAY / 2, n))
        cat = rng.choice([w.CAT["electronics"], w.CAT["online_retail"], w.CAT["cash"]], n)
        amount = scale * w.CATEGORY_MULT[cat] * (2 + 4 * loud) * rng.lognormal(0, 0.3, n)
        country = np.full(n, home_or(w.near_country(p.home, rng)))
        channel = np.where(cat == w.CAT["cash"], 2, 1)
    elif ftype == "interleaved_cnp":  # card-not-present abroad, while the owner shops at home
        n = int(rng.integers(6, 15))
        t = start + np.sort(rng.uniform(0, rng.uniform(1, 3) * DAY, n))
        cat = p.cats[rng.choice(4, n, p=p.cat_weights)]
        amount = np.exp(p.mu + p.sigma * rng.standard_normal(n)) * w.CATEGORY_MULT[cat] * (1 + loud)
        country = np.full(n, w.near_country(p.home, rng))
        channel = np.ones(n, np.int64)
    elif ftype == "merchant_spree":  # new online merchants in the card's usual categories
        n = int(rng.integers(5, 13))
        t = start + np.sort(rng.uniform(0, rng.uniform(0.5, 2) * DAY, n))
        cat = p.cats[rng.choice(4, n, p=p.cat_weights)]
        amount = np.exp(p.mu + p.sigma * rng.standard_normal(n)) * w.CATEGORY_MULT[cat] * (1 + 0.5 * loud)
        country = np.full(n, p.home)
        channel = np.ones(n, np.int64)
    elif ftype == "amount_doubling":  # amounts that double step by step
        n = int(rng.integers(5, 9))
        t = start + np.sort(rng.uniform(0, rng.uniform(1, 3) * DAY, n))
        cat = p.cats[rng.choice(4, n, p=p.cat_weights)]
        amount = scale * w.CATEGORY_MULT[cat] * 0.5 * 2.0 ** np.arange(n) * rng.lognormal(0, 0.1, n)
        country = np.full(n, p.home)
        channel = _channel(cat, p.ecom_bias, rng)
    elif ftype == "drift":
        n = int(rng.integers(8, 16))
        t = start + np.sort(rng.uniform(0, 4 * DAY, n))
        cat = p.cats[rng.choice(4, n, p=p.cat_weights)]
        growth = np.linspace(1.5, 2.0 + 6.0 * loud, n)
        amount = np.exp(p.mu) * w.CATEGORY_MULT[cat] * growth * rng.lognormal(0, 0.15, n)
        country = np.full(n, p.home)
        channel = np.ones(n, np.int64)
    else:  # pragma: no cover - Scenario validates the names
        raise ValueError(ftype)
    c = _cols(n)
    c.update(
        t=t,
        amount=amount,
        cat=np.asarray(cat, np.int64),
        country=np.asarray(country, np.int64),
        channel=np.asarray(channel, np.int64),
    )
    c["card"][:] = card
    usual = rng.random(n) < subtle * 0.5
    new_merchant = 900_000 + rng.integers(0, 99_999, n)  # merchants never seen in normal traffic
    c["merchant"] = np.where(usual, p.merchants[0, 0], new_merchant)
    c["label"][:] = 1
    c["ftype"][:] = FRAUD_TYPES.index(ftype)  # type: ignore[arg-type]
    c["incident"][:] = incident
    return c


def simulate_cards(streams: int, days: int, scenario: Scenario, seed: int) -> dict[str, np.ndarray]:
    """All events of the period as columns, sorted by time (ties by card)."""
    root = np.random.SeedSequence(seed)
    card_seeds = root.spawn(streams)
    plan_rng = np.random.default_rng(root.spawn(1)[0])
    types = [t for t in FRAUD_TYPES if scenario.mix.get(t, 0) > 0]
    weights = np.array([scenario.mix[t] for t in types], dtype=float)
    victims = plan_rng.random(streams) < scenario.fraud_share if types else np.zeros(streams, bool)
    parts: list[dict[str, np.ndarray]] = []
    incident = 0
    homes = None
    if scenario.home_countries:
        homes = np.array([float(code in scenario.home_countries) for code in w.COUNTRY_CODES])
        homes /= homes.sum()
    for card in range(streams):
        rng = np.random.default_rng(card_seeds[card])
        p = draw_profile(rng, homes, scenario.rate_scale)
        c = normal_events(card, p, days, rng)
        if scenario.atm_share > 0 and rng.random() < scenario.atm_share:
            add_atm_use(c, p, rng)
        if rng.random() < scenario.travel_share:
            add_travel(c, p, days, rng)
        if rng.random() < scenario.large_purchase_share:
            add_large_purchase(c, p, rng)
        if victims[card]:
            ftype = str(plan_rng.choice(types, p=weights / weights.sum()))
            start = rng.uniform(0.4, 0.9) * days * DAY
            if ftype == "dormant_reactivation":  # the card falls silent for up to 20 days first
                quiet = min(20 * DAY, 0.5 * start)
                keep = (c["t"] < start - quiet) | (c["t"] >= start + DAY)
                c = {k: v[keep] for k, v in c.items()}
            f = fraud_events(ftype, card, incident, p, start, scenario.subtlety, rng)
            c = {k: np.concatenate([c[k], f[k]]) for k in COLUMNS}
            incident += 1
        parts.append(c)
    out = {k: np.concatenate([pt[k] for pt in parts]) for k in COLUMNS}
    keep = out["t"] < days * DAY
    out = {k: v[keep] for k, v in out.items()}
    order = np.lexsort((out["card"], out["t"]))
    out = {k: v[order] for k, v in out.items()}
    out["amount"] = np.round(np.maximum(out["amount"] * scenario.amount_scale, 0.01), 2)
    return out
