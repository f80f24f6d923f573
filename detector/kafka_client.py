"""kafka-python plumbing shared by the source, the sink, replay and topic creation.

opts = client_options(settings.kafka)       # bootstrap + TLS/SASL in kafka-python's names
ensure_topics(settings.kafka, ["events", "alerts"])
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from detector.config import KafkaConfig
from detector.exceptions import KafkaUnavailable

log = logging.getLogger(__name__)
# 10 s: long enough for a broker on a loaded 2-core machine, short enough to fail fast at startup.
REQUEST_TIMEOUT_MS = 10_000
# Consumers refresh topic metadata this often (see the consumers for why not the 5 min default).
METADATA_MAX_AGE_MS = 10_000


def client_options(cfg: KafkaConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "bootstrap_servers": cfg.bootstrap_servers.split(","),
        "security_protocol": cfg.security_protocol,
        "client_id": f"detector-{cfg.group_id}",
    }
    if cfg.sasl_mechanism:
        opts["sasl_mechanism"] = cfg.sasl_mechanism
        opts["sasl_plain_username"] = cfg.sasl_username
        opts["sasl_plain_password"] = cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
    if cfg.ssl_cafile:
        opts["ssl_cafile"] = str(cfg.ssl_cafile)
    if cfg.ssl_certfile:
        opts["ssl_certfile"] = str(cfg.ssl_certfile)
    if cfg.ssl_keyfile:
        opts["ssl_keyfile"] = str(cfg.ssl_keyfile)
    return opts


def partition_count(cfg: KafkaConfig, topic: str) -> int:
    """Partitions of an existing topic (0 if it does not exist)."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        c = KafkaConsumer(request_timeout_ms=max(REQUEST_TIMEOUT_MS, 30_000), **client_options(cfg))
        try:
            return len(c.partitions_for_topic(topic) or ())
        finally:
            c.close()
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot read the metadata of {topic} at {cfg.bootstrap_servers}: {exc}") from None


def ensure_topics(
    cfg: KafkaConfig, topics: Iterable[str], compacted: Iterable[str] = (), partitions: int | None = None
) -> list[str]:
    """Create the missing topics (partitions and replication from config); returns those created."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    compact = set(compacted)
    try:
        admin = KafkaAdminClient(request_timeout_ms=REQUEST_TIMEOUT_MS, **client_options(cfg))
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {cfg.bootstrap_servers}: {exc}") from None
    try:
        return _create_missing(admin, cfg, topics, compact, partitions)
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot create topics at {cfg.bootstrap_servers}: {exc}") from None
    finally:
        admin.close()


def _create_missing(
    admin: Any, cfg: KafkaConfig, topics: Iterable[str], compact: set[str], partitions: int | None
) -> list[str]:
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    existing = set(admin.list_topics())
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    new = [
        NewTopic(
            t,
            partitions or cfg.partitions,
            cfg.replication_factor,
            topic_configs={"cleanup.policy": "compact"} if t in compact else {},
        )
        for t in wanted
    ]
    if new:
        try:
            admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass  # another instance of the group created it first
        log.info("created topics %s", wanted)
    return wanted
