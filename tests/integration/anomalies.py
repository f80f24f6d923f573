"""Blatant anomalies appended to a replay, so a test that needs alerts gets some from any model."""

from __future__ import annotations

import orjson

from detector.core.features import parse_timestamp


def with_blatant(lines: list[bytes], n: int = 20) -> list[bytes]:
    """`lines` plus, for n streams that appear in them, one more event a minute after the stream's
    last: an ATM withdrawal of 9 million in a country no card has. Every feature the default
    config has that can be absurd is absurd (the amount is 10 standard deviations out, clipped)."""
    last: dict[str, dict[str, object]] = {}
    for x in lines:
        ev = orjson.loads(x)
        last[ev["stream_id"]] = ev
    extra = []
    for k, ev in enumerate(list(last.values())[:n]):
        extra.append(
            orjson.dumps(
                {
                    **ev,
                    "event_id": f"blatant-{k}",
                    "ts": parse_timestamp(ev["ts"]) + 60.0,  # epoch seconds are valid too
                    "amount": 9e6,
                    "country": "ZZ",
                    "channel": "atm",
                    "merchant_category": "jewelry",
                }
            )
        )
    return lines + extra
