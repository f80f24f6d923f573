"""detector.kafka.base.TransactionalSink on kafka-python 3's transactional producer
(`kafka.delivery: exactly_once`): its `send_offsets_to_transaction` takes the consumer's group
metadata (KIP-447), so a zombie's offsets are refused by the broker."""

from __future__ import annotations

import logging
import time
from typing import Any

from detector.config import KafkaConfig
from detector.exceptions import KafkaUnavailable
from detector.kafka.base import REQUEST_TIMEOUT_MS, DeliveryFailed, OpensTransactions, Partition
from detector.kafka.kafka_python import KafkaSink, client_options

log = logging.getLogger(__name__)


class KafkaTransactionalSink(OpensTransactions, KafkaSink):
    """detector.kafka.base.TransactionalSink on kafka-python's transactional producer. Its
    commit and abort wait at most `timeout` (the producer's own calls wait without end)."""

    def __init__(self, cfg: KafkaConfig, transactional_id: str, timeout_ms: int) -> None:
        super().__init__(cfg)
        self.transactional_id, self.timeout_ms = transactional_id, timeout_ms

    def __enter__(self) -> KafkaTransactionalSink:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self._producer = KafkaProducer(
            acks="all",
            enable_idempotence=True,
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self.timeout_ms,
            linger_ms=self.linger_ms,
            batch_size=self.batch_bytes,
            max_block_ms=max(REQUEST_TIMEOUT_MS, 30_000),
            **client_options(self.cfg),
        )
        try:
            # Fences older producers of this id and aborts what a crashed one left open.
            self._producer.init_transactions()
        except KafkaError as exc:
            self.close(0.0)
            raise KafkaUnavailable(f"initialising transactions ({self.transactional_id}): {exc}") from None
        return self

    def _client_errors(self) -> tuple[type[BaseException], ...]:
        from kafka.errors import KafkaError

        return (KafkaError,)

    def _wait(self, result: Any, timeout: float, what: str) -> None:
        self._producer._sender.wakeup()
        if not result.wait(timeout_ms=max(int(timeout * 1000), 1)):
            raise DeliveryFailed(f"{what}: not acknowledged within {timeout:.1f}s")

    def commit(self, offsets: dict[Partition, int], source: Any, timeout: float) -> None:
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata, TopicPartition

        if not self._open and not offsets:
            return
        deadline = time.monotonic() + timeout
        try:
            self._begin()
            tm = self._producer._transaction_manager
            if offsets:
                tps = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
                result = tm.send_offsets_to_transaction(tps, source.group_metadata())
                self._wait(result, deadline - time.monotonic(), "sending offsets to the transaction")
            self._wait(tm.begin_commit(), deadline - time.monotonic(), "committing the transaction")
        except (KafkaError, DeliveryFailed) as exc:
            self.abort(max(deadline - time.monotonic(), 1.0))
            raise DeliveryFailed(f"transaction aborted: {exc}") from None
        self._open = False
        self._pending = []

    def abort(self, timeout: float) -> None:
        """Abort the open transaction, if any; a producer that cannot (fenced, broker away) leaves
        it to the broker's timeout or to the next producer of its id."""
        from kafka.errors import KafkaError

        if not self._open or self._producer is None:
            return
        self._open = False
        try:
            self._wait(self._producer._transaction_manager.begin_abort(), timeout, "aborting the transaction")
        except (KafkaError, DeliveryFailed) as exc:
            log.warning("could not abort the transaction (%s): the next producer of its id will", exc)
