"""The one place that picks the Kafka client library (`kafka.client`).

    client = client_for(settings.kafka)
    source, sink, admin = client.source(on_assign, on_revoke), client.sink(), client.admin()

kafka-python is the default; confluent (librdkafka) the fast option (`pip install 'detector[fast]'`),
imported only when chosen. A new client is one module in this package and one line here.
"""

from __future__ import annotations

from detector.config import KafkaConfig
from detector.kafka.base import Client


def client_for(cfg: KafkaConfig) -> Client:
    if cfg.client == "confluent":
        from detector.kafka.confluent import ConfluentClient

        return ConfluentClient(cfg)
    from detector.kafka.kafka_python import KafkaPythonClient

    return KafkaPythonClient(cfg)
