"""Simulated card columns to JSON records (written by detector.jsonl, byte-identically for the
same seed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from simulators import world as w
from simulators.scenario import FRAUD_TYPES

# Simulated time starts on a Monday, so day-of-week features line up with the weekend factor.
EPOCH = np.datetime64("2026-01-05T00:00:00", "ms")


def card_records(c: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    ts = np.datetime_as_string(EPOCH + (c["t"] * 1000).astype("timedelta64[ms]"), unit="ms")
    cats, ccy, codes = w.CATEGORY_NAMES, w.CURRENCIES, w.COUNTRY_CODES
    for i in range(len(ts)):
        ft = int(c["ftype"][i])
        inc = int(c["incident"][i])
        country = int(c["country"][i])
        yield {
            "event_id": f"e{i:09d}",
            "stream_id": f"card-{int(c['card'][i]):06d}",
            "ts": str(ts[i]) + "Z",
            "amount": float(c["amount"][i]),
            "currency": ccy[country],
            "merchant_id": f"m{int(c['merchant'][i]):07d}",
            "merchant_category": cats[int(c["cat"][i])],
            "country": codes[country],
            "channel": w.CHANNELS[int(c["channel"][i])],
            "label": int(c["label"][i]),
            "fraud_type": FRAUD_TYPES[ft] if ft >= 0 else None,
            "incident_id": f"inc-{inc:05d}" if inc >= 0 else None,
        }
