"""The confluent-kafka clients the administration and the feeds use, all built from
:func:`stream.kafka_config.client_config` (so they carry the TLS/SASL settings): an admin
client, a throwaway consumer outside any group, an assigned consumer for the worker's feeds,
and :class:`RestingReader`, which stops an idle feed consumer from fetching in a tight loop.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from stream.kafka_config import client_config


class AdminError(RuntimeError):
    """A Kafka administrative operation failed; the message says which and why."""


class TopicMismatchError(AdminError):
    """Existing topics differ from the registry (partition count or cleanup policy)."""


def _servers(bootstrap: str) -> str:
    return ",".join(s.strip().removeprefix("kafka://") for s in bootstrap.split(",") if s.strip())


def client_config_for(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return client_config(  # with the TLS/SASL settings (stream/kafka_config.py)
        _servers(bootstrap),
        **{
            "log.connection.close": False,
            # librdkafka logs connection failures to stderr unless it has a logger.
            "logger": logging.getLogger("stream.local.clients.librdkafka"),
            **extra,
        },
    )


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient(client_config_for(bootstrap))


def throwaway_consumer(bootstrap: str, extra: Mapping[str, Any] | None = None) -> Consumer:
    return Consumer(
        client_config_for(
            bootstrap,
            **{
                "group.id": f"purchase-stream-admin-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                **(extra or {}),
            },
        )
    )


def assigned_consumer(
    bootstrap: str,
    name: str,
    topics: Iterable[str],
    partitions: int,
    offset: int,
    fetch_wait_ms: int,
) -> Consumer:
    """A consumer that reads every partition of ``topics`` from ``offset`` by ``assign``,
    outside any consumer group (the worker's catalogue and live-update feeds: every worker
    reads all of it, and nothing is committed). ``group.id`` is required by librdkafka but
    never joined."""
    consumer = Consumer(
        client_config_for(
            bootstrap,
            **{
                "group.id": f"purchase-stream-{name}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": fetch_wait_ms,
            },
        )
    )
    consumer.assign([TopicPartition(t, p, offset) for t in topics for p in range(partitions)])
    return consumer


class RestingReader:
    """Polls an :func:`assigned_consumer` and stops it fetching while there is nothing new.

    A Kafka broker holds an empty fetch for ``fetch.wait.max.ms``; the embedded noida-db
    answers at once, and librdkafka then re-fetches in a tight loop: ~0.43 of a core per idle
    feed consumer in a worker with no traffic, and the broker's CPU to answer it
    (benchmarks/results/2026-12-07-diary.md, section 1). librdkafka has no backoff for empty
    fetches, and ``pause``/``resume`` delayed records by up to 1.3 s and skipped one at a logical
    offset. So the reader keeps every partition's next offset itself (numeric from the start), and
    when a poll finds nothing it unassigns, rests ``rest_s`` and assigns again at those offsets:
    nothing is skipped, and the first record after a quiet spell waits at most ``rest_s`` longer.
    """

    def __init__(
        self, consumer: Consumer, positions: Mapping[tuple[str, int], int], rest_s: float = 0.1
    ) -> None:
        self.consumer = consumer
        self.positions = dict(positions)
        self.rest_s = rest_s
        consumer.assign(self._assignment())

    @classmethod
    def at(
        cls, consumer: Consumer, topics: Iterable[str], partitions: int, end: bool
    ) -> RestingReader:
        """From each partition's high (``end``) or low watermark as it is now."""
        positions = {}
        for t in topics:
            for p in range(partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=30)
                positions[(t, p)] = high if end else low
        return cls(consumer, positions)

    def _assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in self.positions.items()]

    def poll(self, stop: threading.Event) -> list[Message]:
        msgs = self.consumer.consume(500, timeout=0.01)
        for m in msgs:
            if m.error() is None:
                self.positions[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
        if not msgs and not stop.is_set():
            self.consumer.unassign()
            stop.wait(self.rest_s)
            self.consumer.assign(self._assignment())
        return msgs


def topic_partitions(admin: AdminClient, timeout: float) -> dict[str, int]:
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise AdminError(f"cannot read cluster metadata within {timeout:.0f} s: {exc}") from exc
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}
