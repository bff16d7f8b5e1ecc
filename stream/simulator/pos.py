"""The POS gateway producer: sends input events (simulated or replayed) to Kafka.

It plays the part of the tills' gateway in local runs, demos and load tests. Each event is a
dict as produced by :mod:`stream.simulator.generator` (``topic``, ``key``, ``value``,
``timestamp``): the
key goes out as UTF-8 bytes, the value through ``codec.encode(topic, value)`` (``None`` is a
tombstone) and the event's ``timestamp`` becomes the Kafka message timestamp, so broker time in
a replay is the recorded one.

The producer is idempotent with ``acks=all`` and the ``murmur2_random`` partitioner, so keys
land on the same partitions as with the Java client and aiokafka (the worker's co-partitioning
of ``pos.receipts`` and ``customer.cards`` depends on it). ``rate`` throttles receipts only;
catalogue, card and consent events go out as fast as the broker takes them.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TextIO

from confluent_kafka import KafkaError, KafkaException, Producer

# Re-exported (`as`): stream/engine/output.py imports it from here until it imports it from
# stream/kafka_config.py.
from stream.kafka_config import producer_config

RECEIPTS_TOPIC = "pos.receipts"
_LOG = logging.getLogger("stream.simulator.pos")


class ValueCodec(Protocol):
    """What the producer needs of a codec (``stream.serde.codec`` provides the real one)."""

    def encode(self, topic: str, value: dict[str, Any]) -> bytes | None: ...


class BrokerUnavailableError(RuntimeError):
    """The broker could not be reached (nothing was sent)."""


class TopicMissingError(RuntimeError):
    """An event names a topic the broker does not have (and does not create)."""


class ProducerFatalError(RuntimeError):
    """librdkafka reported a fatal error (e.g. the idempotent producer was fenced)."""


class _TokenBucket:
    """At most ``rate`` tokens per second, with a burst of a tenth of a second (at least 1)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate / 10.0)
        self.tokens = self.capacity
        self.clock = clock
        self.last = clock()

    def take(self) -> float:
        """Take one token; returns how many seconds to wait before using it (0 if none)."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0.0 else -self.tokens / self.rate


class _Tally:
    """Delivery results; written by librdkafka callbacks (run inside poll/flush)."""

    def __init__(self) -> None:
        self.delivered = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.fatal: KafkaError | None = None

    def on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self.delivered += 1
            return
        self.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{msg.topic()}: {err}")

    def on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err


class _Progress:
    """One status line on stderr about every ``interval`` seconds."""

    def __init__(self, enabled: bool, stream: TextIO, interval: float = 1.0) -> None:
        self.enabled = enabled
        self.stream = stream
        self.interval = interval
        self.tty = stream.isatty()
        self.start = self.last = time.monotonic()
        self.last_receipts = 0
        self.shown = False

    def update(self, events: int, receipts: int, tally: _Tally, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < self.interval:
            return
        if final:
            rate = receipts / max(now - self.start, 1e-9)
        else:
            rate = (receipts - self.last_receipts) / max(now - self.last, 1e-9)
        self.last, self.last_receipts = now, receipts
        line = (
            f"pos: {events} events sent, {receipts} receipts, {rate:,.0f} receipts/s"
            f"{' (average)' if final else ''}, {tally.delivered} delivered, "
            f"{tally.errors} delivery errors"
        )
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _check_topic(
    producer: Any, topic: str, known: set[str], bootstrap: str, timeout: float
) -> None:
    """Fail early and clearly when a topic does not exist (instead of 60 s delivery timeouts)."""
    if topic in known:
        return
    deadline = time.monotonic() + timeout
    while True:
        # Asking for one topic lets a broker with auto-creation create it.
        metadata = producer.list_topics(topic, timeout=timeout)
        info = metadata.topics.get(topic)
        error = None if info is None else info.error
        if info is not None and error is None:
            known.add(topic)
            return
        retriable = error is not None and error.code() == KafkaError.LEADER_NOT_AVAILABLE
        if not retriable or time.monotonic() > deadline:
            raise TopicMissingError(
                f"topic {topic!r} is not available on {bootstrap} ({error}); "
                "create the topics first (purchase-stream topics)"
            )
        time.sleep(0.2)


def _warn_if_old(timestamp: int | None) -> None:
    """Records older than a topic's retention.ms are deleted by the broker as soon as written."""
    if timestamp:
        age_days = (time.time() * 1000 - timestamp) / 86_400_000
        if age_days > 6:
            _LOG.warning(
                "message timestamps are %.0f days old: a topic with time-based retention "
                "shorter than that (Kafka's default is 7 days) drops them at once; use a "
                "recent start time or create the topics with a longer retention.ms",
                age_days,
            )


def produce(
    events: Iterable[dict[str, Any]],
    *,
    bootstrap: str,
    codec: ValueCodec,
    rate: float | None = None,
    progress: bool = False,
    bad_bytes: Sequence[tuple[str, bytes | None, bytes]] = (),
    connect_timeout: float = 10.0,
    flush_timeout: float = 120.0,
    config: dict[str, Any] | None = None,
    producer_factory: Callable[[dict[str, Any]], Any] = Producer,
    progress_stream: TextIO | None = None,
) -> dict[str, Any]:
    """Send ``events`` to the broker at ``bootstrap``; returns counts and timings.

    ``rate``: receipts per second (token bucket on ``pos.receipts`` events), ``None`` or 0 =
    as fast as possible. ``bad_bytes``: raw ``(topic, key, value)`` payloads sent unencoded,
    right after the first receipt (so they sit mid-stream, after the card register), or at the
    end if there is no receipt. ``config`` overrides librdkafka settings. Raises
    :class:`BrokerUnavailableError` if the broker cannot be reached within ``connect_timeout``
    seconds, :class:`TopicMissingError` for a topic the broker does not have.
    """
    tally = _Tally()
    settings = producer_config(bootstrap, **(config or {}))
    settings["error_cb"] = tally.on_error
    producer = producer_factory(settings)
    try:
        metadata = producer.list_topics(timeout=connect_timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        reason = err.str() if isinstance(err, KafkaError) else str(exc)
        raise BrokerUnavailableError(
            f"cannot reach the Kafka broker at {bootstrap} within {connect_timeout:g} s: {reason}"
        ) from exc
    known: set[str] = set(metadata.topics)
    bucket = _TokenBucket(rate) if rate else None
    show = _Progress(progress, progress_stream or sys.stderr)
    by_topic: Counter[str] = Counter()
    sent = receipts = 0
    bad_sent = 0
    pending_bad = list(bad_bytes)
    started = time.monotonic()

    def send(topic: str, key: bytes | None, value: bytes | None, timestamp: int) -> None:
        while True:
            try:
                producer.produce(
                    topic, value=value, key=key, timestamp=timestamp, on_delivery=tally.on_delivery
                )
                return
            except BufferError:  # local queue full: let deliveries drain it
                producer.poll(0.05)
                check_fatal()

    def check_fatal() -> None:
        if tally.fatal is not None:
            raise ProducerFatalError(f"Kafka producer failed: {tally.fatal}")

    def send_bad(timestamp: int) -> None:
        nonlocal bad_sent
        for topic, key, value in pending_bad:
            _check_topic(producer, topic, known, bootstrap, connect_timeout)
            send(topic, key, value, timestamp)
            by_topic[topic] += 1
            bad_sent += 1
        pending_bad.clear()

    try:
        last_ts = 0
        warned_old = False
        for event in events:
            topic = event["topic"]
            if not warned_old and topic == RECEIPTS_TOPIC:
                warned_old = True
                _warn_if_old(event.get("timestamp"))
            _check_topic(producer, topic, known, bootstrap, connect_timeout)
            if topic == RECEIPTS_TOPIC:
                if bucket is not None:
                    wait = bucket.take()
                    if wait > 0:
                        deadline = time.monotonic() + wait
                        while (left := deadline - time.monotonic()) > 0:
                            producer.poll(min(left, 0.1))
                            show.update(sent, receipts, tally)
                receipts += 1
            key = event.get("key")
            value = event.get("value")
            last_ts = int(event.get("timestamp") or 0)
            send(
                topic,
                None if key is None else str(key).encode(),
                None if value is None else codec.encode(topic, value),
                last_ts,
            )
            by_topic[topic] += 1
            sent += 1
            if pending_bad and topic == RECEIPTS_TOPIC:
                send_bad(last_ts)
            if sent % 500 == 0:
                producer.poll(0)
                check_fatal()
                show.update(sent, receipts, tally)
        if pending_bad:
            send_bad(last_ts)
    except BaseException:
        producer.flush(5.0)  # do not drop what is already queued; the caller sees the error
        raise

    remaining = producer.flush(flush_timeout)
    check_fatal()
    elapsed = time.monotonic() - started
    show.update(sent + bad_sent, receipts, tally, final=True)
    return {
        "events": sent,
        "receipts": receipts,
        "bad_bytes": bad_sent,
        "by_topic": dict(by_topic),
        "delivered": tally.delivered,
        "delivery_errors": tally.errors,
        "undelivered": remaining,
        "error_samples": tally.error_samples,
        "seconds": round(elapsed, 3),
        "receipts_per_second": round(receipts / elapsed, 1) if elapsed > 0 else 0.0,
        "events_per_second": round((sent + bad_sent) / elapsed, 1) if elapsed > 0 else 0.0,
    }


def send_recall_request(settings: Any, request: dict[str, Any]) -> None:
    """Send a recall request to *every* partition of ``recall.requests`` (the recall index
    is partitioned by customer) and wait for the broker's acknowledgements."""
    from confluent_kafka import Producer

    from stream.serde.codec import Codec
    from stream.serde.schema_registry import registry_from_settings

    codec = Codec(registry_from_settings(settings))
    key = codec.encode_key(request["recall_id"])
    value = codec.encode("recall.requests", request)
    producer = Producer(producer_config(settings.broker, **{"client.id": "recall-cli"}))
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for partition in range(settings.partitions):
        producer.produce(
            "recall.requests", key=key, value=value, partition=partition, on_delivery=delivered
        )
    remaining = producer.flush(30)
    if remaining or errors:
        raise ProducerFatalError(f"recall request not delivered: {errors or remaining}")
