"""Scale-out: one and two daemons in one consumer group on an 8-partition topic."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path
from typing import Any

from bench.e2e.harness import daemon, daemon_settings, produce
from detector.config import Settings


def scale_out(
    base: Settings, bootstrap: str, model: Path, lines: list[bytes], procs: int, tmp: Path, client: str
) -> dict[str, Any]:
    """`procs` daemons in one consumer group on an 8-partition topic pre-filled with `lines`.

    Rate = committed offsets gained / time, from the group's first commit to its last: the
    steady state of the group, start-up (TensorFlow import, join) excluded alike for 1 and 2.
    """
    from kafka.admin import KafkaAdminClient

    from detector.config import KafkaConfig
    from detector.kafka.factory import client_for

    tag = uuid.uuid4().hex[:6]
    topic = f"scale-{tag}"
    client_for(KafkaConfig(bootstrap_servers=bootstrap, partitions=8)).admin().ensure_topics([topic])
    produce(bootstrap, topic, lines, "confluent")
    d = daemon_settings(base, bootstrap, topic, model, tag, client).model_dump()
    d["state"]["checkpoint_interval_seconds"] = 1.0  # fine-grained commits: the clock of this measure
    d["kafka"]["partitions"] = 8
    s = Settings(**d)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    daemons = [daemon(s, tmp, []) for _ in range(procs)]
    first: tuple[float, int] | None = None
    done = 0
    deadline = time.monotonic() + 600
    try:
        while done < len(lines) and time.monotonic() < deadline:
            offsets = admin.list_group_offsets(s.kafka.group_id).get(s.kafka.group_id, {})
            done = sum(o.offset for tp, o in offsets.items() if tp.topic == topic and o.offset > 0)
            if first is None and done > 0:
                first = (time.monotonic(), done)
            time.sleep(0.1)
        last = time.monotonic()
    finally:
        for p in daemons:
            p.send_signal(signal.SIGTERM)
        for p in daemons:
            p.communicate(timeout=60)
        admin.close()
    if first is None or done < len(lines):
        raise RuntimeError(f"scale-out with {procs} processes committed {done} of {len(lines)}")
    # None when the first commit already held every event: too few events to time (a smoke run).
    rate = (done - first[1]) / (last - first[0]) if done > first[1] and last > first[0] else None
    return {"processes": procs, "partitions": 8, "events": len(lines), "events_per_s": rate}
