"""`detector replay --rate`: the rate it holds over a whole file."""

from __future__ import annotations

import uuid
from pathlib import Path


def replay_rate(bootstrap: str, tmp: Path, lines: list[bytes], rate: float) -> dict[str, float]:
    """`detector replay --rate`: the rate it holds over the whole file."""
    from detector.config import KafkaConfig
    from simulators.replay import replay

    path = tmp / "replay.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    res = replay(
        path, KafkaConfig(bootstrap_servers=bootstrap), f"rate-{uuid.uuid4().hex[:6]}", rate=rate, progress=False
    )
    achieved = res.sent / res.seconds
    return {
        "target_per_s": rate,
        "achieved_per_s": achieved,
        "error_pct": 100 * (achieved - rate) / rate,
        "failed": res.failed,
    }
