"""Replay files to and from the broker: ``purchase-stream produce`` and ``purchase-stream dump``.

``produce_file`` sends the records of a replay file (the JSONL format of :mod:`stream.tools.replay`)
to their topics, with their keys and their ``timestamp`` as the Kafka message timestamp,
through an idempotent producer (``acks=all``, the murmur2 partitioner, so keys land on the
partitions the workers' co-partitioned joins expect). It is the backfill tool, and it lets any
replay scenario be driven through live workers. Every line is validated exactly as ``replay``
validates it (:func:`stream.tools.replay.encode_event`); a line that cannot become a record is
reported with its line number and not sent.

``dump`` writes what the input topics hold back as a replay file. Avro values are decoded to
plain JSON (``value``) through the schema registry the producers used, so ``replay`` can
encode them again with its own; bytes that do not decode (a poison record) are kept as they
are (``value_b64``) and take the same dead-letter path in ``replay`` as in the workers.

The order of a dump: each partition's records stay in offset order (the order in which a
worker reads them); partitions are interleaved by broker timestamp, and at equal timestamps
the reference data comes first (catalogue, cards, consents, then receipts), as the simulator
and the tills produce them. That is the order ``replay`` needs to reach the same result as the
workers for any stream whose outcome does not depend on how Kafka interleaves two topics
(Kafka orders records within a partition only; see docs/reliability.md).
"""

from __future__ import annotations

import base64
import heapq
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from stream.kafka_config import producer_config
from stream.local.offsets import Record, read_all
from stream.serde.codec import Codec, DecodeError, EncodeError
from stream.simulator.pos import BrokerUnavailableError, ProducerFatalError
from stream.tools.replay import INPUT_TOPICS, encode_event

log = logging.getLogger(__name__)

# At equal broker timestamps the reference data goes first (see the module docstring).
TOPIC_RANK = {
    "product.catalog": 0,
    "customer.cards": 1,
    "customer.consents": 2,
    "pos.receipts": 3,
}


class _Progress:
    """One line on stderr about every ``interval`` seconds, and a last one at the end."""

    def __init__(self, what: str, stream: IO[str] | None, interval: float = 1.0) -> None:
        self.what = what
        self.stream = stream
        self.interval = interval
        self.started = self.last = time.monotonic()

    def update(self, done: int, detail: str = "", *, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        line = f"{self.what}: {done:,} records, {rate:,.0f}/s{', ' + detail if detail else ''}"
        print(line + (" (done)" if final else ""), file=self.stream, flush=True)


def read_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of every non-blank line of a JSONL file."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if raw.strip():
                yield lineno, raw


def produce_file(
    path: str | Path,
    *,
    bootstrap: str,
    codec: Codec,
    progress: IO[str] | None = None,
    connect_timeout: float = 10.0,
    flush_timeout: float = 120.0,
    config: dict[str, Any] | None = None,
    producer_factory: Callable[[dict[str, Any]], Any] = Producer,
) -> dict[str, Any]:
    """Send every record of the replay file at ``path``; returns counts.

    Lines that ``replay`` would dead-letter as ``invalid_json`` / ``invalid_event`` /
    ``schema_mismatch`` are reported on ``progress`` (or stderr) with their line number and
    counted in ``bad_lines``; nothing is sent for them. Raises
    :class:`stream.simulator.pos.BrokerUnavailableError` when the broker cannot be reached and
    :class:`stream.simulator.pos.ProducerFatalError` on a fatal producer error.
    """
    errors: list[str] = []
    delivered = 0
    fatal: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1
        elif len(errors) < 10:
            errors.append(f"{msg.topic()}: {err}")
        else:
            errors.append("")  # counted, not kept

    def on_error(err: KafkaError) -> None:
        if err.fatal():
            fatal.append(err)

    settings = producer_config(
        bootstrap, **{"client.id": "purchase-stream-produce", **(config or {})}
    )
    settings["error_cb"] = on_error
    producer = producer_factory(settings)
    try:
        producer.list_topics(timeout=connect_timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"cannot reach the Kafka broker at {bootstrap} within {connect_timeout:g} s: {exc}"
        ) from exc

    show = _Progress("produce", progress)
    by_topic: Counter[str] = Counter()
    bad_lines = 0
    sent = 0
    for lineno, raw in read_lines(path):
        try:
            event = orjson.loads(raw)
            if not isinstance(event, dict):
                raise ValueError("a line must be a JSON object")
            topic, key, value, ts = encode_event(codec, event)
        except (orjson.JSONDecodeError, EncodeError, ValueError, TypeError, KeyError) as exc:
            bad_lines += 1
            print(f"line {lineno}: not sent: {str(exc)[:300]}", file=progress or sys.stderr)
            continue
        while True:
            try:
                producer.produce(topic, key=key, value=value, timestamp=ts, on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        sent += 1
        by_topic[topic] += 1
        if sent % 1000 == 0:
            producer.poll(0)
            if fatal:
                raise ProducerFatalError(f"Kafka producer failed: {fatal[0]}")
            show.update(sent, f"{delivered:,} delivered")
    remaining = producer.flush(flush_timeout)
    if fatal:
        raise ProducerFatalError(f"Kafka producer failed: {fatal[0]}")
    show.update(sent, f"{delivered:,} delivered, {len(errors)} delivery errors", final=True)
    return {
        "sent": sent,
        "delivered": delivered,
        "delivery_errors": len(errors),
        "error_samples": [e for e in errors if e],
        "undelivered": remaining,
        "bad_lines": bad_lines,
        "by_topic": dict(sorted(by_topic.items())),
    }


def record_event(codec: Codec, topic: str, rec: Record) -> dict[str, Any]:
    """One broker record as a replay-file event (``value``, or ``value_b64`` for raw bytes)."""
    if rec.key is None:
        key = None
    else:
        try:
            key = rec.key.decode("utf-8")
        except UnicodeDecodeError:
            # A replay key is text; a key that is not would be dead-lettered by the worker as
            # undecodable, which replay cannot express. Kept visibly rather than dropped.
            raise ValueError(f"{topic}[{rec.partition}]@{rec.offset}: key is not UTF-8") from None
    event: dict[str, Any] = {"topic": topic, "key": key, "timestamp": max(rec.timestamp, 0)}
    if rec.value is None:
        event["value"] = None
        return event
    try:
        value = codec.decode(topic, rec.value)
        # The decoded record must survive replay's strict validation and encode again;
        # otherwise the file would carry something other than what the broker held.
        encode_event(codec, {**event, "value": value})
        event["value"] = value
    except (DecodeError, EncodeError, ValueError, TypeError):
        event["value_b64"] = base64.b64encode(rec.value).decode("ascii")
    return event


def merge_partitions(
    by_topic: Mapping[str, Sequence[Record]],
) -> Iterator[tuple[str, Record]]:
    """Every record once: each partition in offset order, partitions interleaved by
    (broker timestamp, topic rank). ``heapq.merge`` keeps each input's own order even where
    its timestamps go backwards (a producer may set any timestamp)."""
    streams: list[Iterable[tuple[int, int, str, Record]]] = []
    for topic in sorted(by_topic, key=lambda t: TOPIC_RANK.get(t, len(TOPIC_RANK))):
        parts: dict[int, list[Record]] = {}
        for rec in by_topic[topic]:
            parts.setdefault(rec.partition, []).append(rec)
        rank = TOPIC_RANK.get(topic, len(TOPIC_RANK))
        for p in sorted(parts):
            recs = sorted(parts[p], key=lambda r: r.offset)
            streams.append([(r.timestamp, rank, topic, r) for r in recs])
    for _ts, _rank, topic, rec in heapq.merge(*streams, key=lambda x: (x[0], x[1])):
        yield topic, rec


def dump(
    bootstrap: str,
    codec: Codec,
    out: IO[bytes],
    topics: Sequence[str] = INPUT_TOPICS,
    *,
    timeout: float = 120.0,
    progress: IO[str] | None = None,
) -> dict[str, Any]:
    """Write every record of ``topics`` (default: the four input topics) to ``out`` as a
    replay file; returns counts. The records are read to the high watermarks as they are
    when the dump starts, and held in memory to be merged."""
    unknown = [t for t in topics if t not in INPUT_TOPICS]
    if unknown:
        raise ValueError(f"dump reads input topics only ({', '.join(INPUT_TOPICS)}): {unknown}")
    show = _Progress("dump", progress)
    by_topic: dict[str, list[Record]] = {}
    for topic in topics:
        by_topic[topic] = read_all(bootstrap, topic, timeout=timeout)
        if progress is not None:
            print(f"dump: read {len(by_topic[topic]):,} records of {topic}", file=progress)
    written: Counter[str] = Counter()
    raw: Counter[str] = Counter()
    skipped = 0
    n = 0
    for topic, rec in merge_partitions(by_topic):
        try:
            event = record_event(codec, topic, rec)
        except ValueError as exc:
            skipped += 1
            print(f"dump: skipped: {exc}", file=progress or sys.stderr)
            continue
        out.write(orjson.dumps(event) + b"\n")
        written[topic] += 1
        raw[topic] += "value_b64" in event
        n += 1
        show.update(n)
    show.update(n, final=True)
    return {
        "records": n,
        "by_topic": dict(sorted(written.items())),
        "raw_values": {t: c for t, c in sorted(raw.items()) if c},
        "skipped": skipped,
    }


__all__ = ["TOPIC_RANK", "dump", "merge_partitions", "produce_file", "record_event"]
