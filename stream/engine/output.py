"""The worker's producer for stage outputs and table changelogs: confluent-kafka (librdkafka).

Faust's own send path (``Topic.send_soon`` -> ProducerBuffer -> ``publish_message`` ->
aiokafka) costs several event-loop round trips and objects per record; one receipt makes
~16 records (outputs and changelog writes), and that path was the largest single cost of
the worker in a py-spy profile (benchmarks/results/2026-12-07-diary.md, section 2).
``Producer.produce`` here is one C call that queues the record for librdkafka's own thread, with no
``await`` -- which is also what the worker's batches need (stream/engine/agents.py: a batch runs
without an await, so it cannot be cancelled half-way).

Delivery before commit, the at-least-once contract: Faust flushes ``app.producer`` before it
commits offsets and when partitions are revoked; :func:`attach` wraps that flush so it also
waits until this producer has delivered everything, and raises (no commit) if a record could
not be delivered. Records of one partition stay in order (idempotent producer).

Changelog offsets: Faust keeps, per table partition, the changelog offset its local RocksDB
holds data up to, and restores from there on start. The delivery reports carry the offsets;
the highest per partition is written when a flush has delivered everything, which is when
local state and changelog agree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from stream.kafka_config import producer_config

log = logging.getLogger(__name__)
# librdkafka's own log lines (connection refused, retries) go to logging, not raw to stderr
_LIBRDKAFKA_LOG = logging.getLogger("stream.engine.output.librdkafka")


def output_config(bootstrap: str, client_id: str, max_batch_bytes: int) -> dict[str, Any]:
    """The worker's producer settings (librdkafka names), with the configured TLS/SASL.

    Idempotent with ``acks=all``: a retried batch is not written twice and the records of
    a partition stay in order, which the changelog offsets rely on. The same key ->
    partition mapping as the Java client and aiokafka (Faust's own producer). A record
    undelivered after ``message.timeout.ms`` is a delivery failure: the worker stops without
    committing (stream/engine/agents.py).
    """
    return producer_config(
        bootstrap,
        **{
            "client.id": client_id,
            "batch.size": max_batch_bytes,
            "queue.buffering.max.messages": 500_000,
            "message.timeout.ms": 300_000,
            "logger": _LIBRDKAFKA_LOG,
        },
    )


class DeliveryError(RuntimeError):
    """Records could not be delivered: offsets must not be committed."""


class Output:
    def __init__(
        self,
        bootstrap: str,
        client_id: str,
        max_batch_bytes: int = 1_000_000,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._producer = Producer(output_config(bootstrap, client_id, max_batch_bytes))
        self._errors: list[str] = []
        # What a delivery failure does. Raising DeliveryError (the default) keeps Faust from
        # committing; the worker passes a handler that stops the process (stream/engine/agents.py):
        # a record the broker refused must never leave a worker running on past it.
        self._on_failure = on_failure
        # (table data, topic, partition) -> highest delivered changelog offset
        self._changelog_offsets: dict[tuple[int, str, int], tuple[Any, int]] = {}

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
        on_delivery: Callable[[Any, Message], None] | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"key": key, "value": value}
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        if partition is not None:
            kwargs["partition"] = partition
        kwargs["on_delivery"] = on_delivery or self._on_delivery
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return
            except BufferError:
                # librdkafka's queue is full: the broker is behind. Block here (the batch
                # must not await) and let deliveries drain it.
                self._producer.poll(0.05)

    def changelog(self, table: Any) -> Callable[[int, bytes, bytes | None], None]:
        """A ``(partition, key, value)`` sender for ``table``'s changelog topic."""
        topic = table.changelog_topic.get_topic_name()
        data = table.data

        def on_delivery(err: Any, msg: Message) -> None:
            if err is not None:
                self._failed(err, msg)
                return
            p, offset = msg.partition() or 0, msg.offset() or 0
            slot = (id(data), topic, p)
            held = self._changelog_offsets.get(slot)
            if held is None or offset > held[1]:
                self._changelog_offsets[slot] = (data, offset)

        def send(partition: int, key: bytes, value: bytes | None) -> None:
            self.send(topic, key, value, partition=partition, on_delivery=on_delivery)

        return send

    def poll(self) -> None:
        """Serve delivery reports (cheap; call after each batch)."""
        self._producer.poll(0)
        if self._errors and self._on_failure is not None:
            self._raise_errors()

    def pending(self) -> int:
        return len(self._producer)

    async def flush(self) -> None:
        """Wait until every record is delivered; raise :class:`DeliveryError` if any failed."""
        while self._producer.flush(0) > 0:
            self._raise_errors()
            await asyncio.sleep(0.002)
        self._raise_errors()
        self._persist_changelog_offsets()

    def close(self, timeout: float = 30.0) -> bool:
        """Deliver what is queued (at shutdown); True only if every record was delivered."""
        left = self._producer.flush(timeout)
        delivered = left == 0 and not self._errors
        if delivered:
            self._persist_changelog_offsets()
        else:
            log.error(
                "output producer closed with %d record(s) undelivered and %d failed",
                left,
                len(self._errors),
            )
        return delivered

    def settle(self, timeout: float = 10.0) -> None:
        """Deliver what is queued and write the delivered changelog offsets into the table
        databases: before Faust flushes and drops them at a stop (store_patches.BEFORE_STOP).
        Undelivered records are left to :meth:`close`, which then reports the stop unclean."""
        if self._producer.flush(timeout) == 0 and not self._errors:
            self._persist_changelog_offsets()

    def _on_delivery(self, err: Any, msg: Message) -> None:
        if err is not None:
            self._failed(err, msg)

    def _failed(self, err: KafkaError, msg: Message) -> None:
        # Topic and partition only: keys are customer/card/household ids.
        self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    def _raise_errors(self) -> None:
        if self._errors:
            errors, self._errors = self._errors, []
            message = (
                f"{len(errors)} record(s) not delivered, e.g. {errors[0]}; "
                "offsets are not committed"
            )
            if self._on_failure is not None:
                self._on_failure(message)
            raise DeliveryError(message)

    def _persist_changelog_offsets(self) -> None:
        from faust.types import TP

        offsets, self._changelog_offsets = self._changelog_offsets, {}
        for (_, topic, partition), (data, offset) in offsets.items():
            try:
                data.set_persisted_offset(TP(topic, partition), offset)
            except Exception as exc:  # noqa: BLE001 - partition closed by a rebalance
                log.debug("changelog offset of %s[%d] not kept: %s", topic, partition, exc)


def attach(app: Any, output: Output) -> None:
    """Make Faust's pre-commit (and revocation) producer flush also flush ``output``."""
    producer = app.producer
    faust_flush = producer.flush

    async def flush() -> None:
        await faust_flush()
        await output.flush()

    producer.flush = flush
