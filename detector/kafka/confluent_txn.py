"""detector.kafka.base.TransactionalSink on librdkafka's transactional producer
(`kafka.delivery: exactly_once`)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from detector.config import KafkaConfig
from detector.exceptions import KafkaUnavailable
from detector.kafka.base import REQUEST_TIMEOUT_MS, DeliveryFailed, OpensTransactions, Partition
from detector.kafka.confluent import ConfluentSink, confluent_options

log = logging.getLogger(__name__)


class ConfluentTransactionalSink(OpensTransactions, ConfluentSink):
    """detector.kafka.base.TransactionalSink on librdkafka's transactional producer."""

    def __init__(self, cfg: KafkaConfig, transactional_id: str, timeout_ms: int) -> None:
        super().__init__(cfg)
        self.transactional_id, self.timeout_ms = transactional_id, timeout_ms
        self._stuck: threading.Thread | None = None  # a commit still waiting in librdkafka

    def __enter__(self) -> ConfluentTransactionalSink:
        from confluent_kafka import KafkaException, Producer

        self._producer = Producer(
            {
                **confluent_options(self.cfg),
                "acks": "all",
                "enable.idempotence": True,
                "partitioner": "murmur2_random",  # as ConfluentSink
                "linger.ms": self.linger_ms,
                "batch.size": self.batch_bytes,
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": self.timeout_ms,
            }
        )
        try:
            # Fences older producers of this id and aborts what a crashed one left open.
            self._producer.init_transactions(max(REQUEST_TIMEOUT_MS, 30_000) / 1000)
        except KafkaException as exc:
            self.close(0.0)
            raise KafkaUnavailable(f"initialising transactions ({self.transactional_id}): {exc}") from None
        return self

    def _client_errors(self) -> tuple[type[BaseException], ...]:
        from confluent_kafka import KafkaException

        return (KafkaException,)

    def commit(self, offsets: dict[Partition, int], source: Any, timeout: float) -> None:
        """Send the offsets and commit, on a helper thread waited for at most `timeout`: librdkafka
        retries an offset commit refused during a rebalance for as long as the group rebalances,
        and the group waits for this very consumer's next poll (a broker restart does that). Past
        the timeout the session ends: closing its consumer ends the wait (the offsets are then
        refused, the transaction never commits), and the next producer of this id fences this one."""
        from confluent_kafka import KafkaException, TopicPartition

        if not self._open and not offsets:
            return
        self._begin()
        failure: list[BaseException] = []
        producer, meta = self._producer, source.group_metadata() if offsets else None
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]

        def work() -> None:
            try:
                if tps:
                    producer.send_offsets_to_transaction(tps, meta, timeout)
                producer.commit_transaction(timeout)
            except KafkaException as exc:
                failure.append(exc)

        t = threading.Thread(target=work, name="transaction-commit", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            self._stuck = t
            raise DeliveryFailed(f"transaction not committed within {timeout:.1f}s (a rebalance or the broker away)")
        if failure:
            self.abort(max(timeout, 1.0))
            raise DeliveryFailed(f"transaction aborted: {failure[0]}")
        self._open = False
        self._pending = []

    def abort(self, timeout: float) -> None:
        """Abort the open transaction, if any; a producer that cannot (fenced, broker away) leaves
        it to the broker's timeout or to the next producer of its id."""
        from confluent_kafka import KafkaException

        if not self._open or self._producer is None or self._stuck is not None:
            return
        self._open = False
        try:
            self._producer.abort_transaction(timeout)
        except KafkaException as exc:
            log.warning("could not abort the transaction (%s): the next producer of its id will", exc)

    def close(self, timeout: float) -> None:
        if self._stuck is not None:
            self._stuck.join(timeout)  # its consumer is closed by now: the wait ends with an error
            if self._stuck.is_alive():
                log.warning("a transaction commit is still waiting in librdkafka: its producer is left to be fenced")
                self._producer = None
                return
        if self._producer is not None:
            # A transaction still open is aborted by the next producer of this id (or the
            # broker's timeout): what it held was never committed. Nothing to flush.
            self._producer.purge()
            self._producer.close()
            self._producer = None
