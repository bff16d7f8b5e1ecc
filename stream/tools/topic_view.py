"""``purchase-stream inspect``: a topic's records as JSON lines, personal ids masked.

The safe way to look at a topic (issue 17): kcat prints keys and values as they are (the
dead letters' keys are card numbers) and Debian's kcat cannot decode Avro. This reads any
topic of stream/local/topics.py with the project's own Kafka settings (TLS/SASL) and codec (Avro
through the schema registry, JSON for the internal topics) and prints one JSON object per
record: ``topic``, ``partition``, ``offset``, ``timestamp``, ``key`` and ``value``.

Masking. Keys, and every field whose name says it holds a person's or household's id (card,
customer, household, member, actor, requested_by; the dead letters' raw key and value bytes;
the audit detail text), are replaced by ``"~" + 10 hex digits``: an HMAC under a key drawn
at random for this run. The same id gets the same token within one run, so records can be
correlated ("these two are the same card"), but tokens cannot be reversed -- a card number
has too few digits for an unkeyed hash to hide it -- nor matched across runs. ``--reveal``
prints the ids as they are and needs ``--purpose``.

Every run writes one audit record to ``audit.log`` (who, purpose, topic, revealed or not),
acknowledged by the broker before the first record is printed; no record is printed if it
cannot be written, as for the API's reads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, Producer
from confluent_kafka import TopicPartition as TP

from stream.engine.patches import PARTITION_EOF
from stream.kafka_config import client_config, producer_config
from stream.local.topics import TOPICS
from stream.serde.codec import Codec, DecodeError
from topologies.records import AUDIT_TOPIC, audit_record

# Field names (any depth) that hold a person's or a household's id, or raw bytes that may.
_PERSONAL_PARTS = ("card", "customer", "household", "member")
_PERSONAL_NAMES = frozenset({"actor", "requested_by", "key", "value", "detail", "sub", "person"})


class InspectError(RuntimeError):
    """The topic cannot be read (unknown, missing on the broker) or the audit failed."""


def is_personal(field: str) -> bool:
    name = field.lower()
    return name in _PERSONAL_NAMES or any(part in name for part in _PERSONAL_PARTS)


class Masker:
    """Replaces ids by per-run keyed tokens (see the module docstring)."""

    def __init__(self, reveal: bool = False, key: bytes | None = None) -> None:
        self.reveal = reveal
        self._key = key or secrets.token_bytes(32)

    def token(self, value: Any) -> Any:
        if value is None or self.reveal:
            return _jsonable(value)
        raw = value if isinstance(value, bytes) else json.dumps(_jsonable(value)).encode()
        return "~" + hmac.new(self._key, raw, hashlib.sha256).hexdigest()[:10]

    def record(self, value: Any, personal: bool = False) -> Any:
        """``value`` with every personal field (at any depth) masked. A personal field that
        holds a record or a list is masked inside (its ids, not its amounts or roles)."""
        if isinstance(value, dict):
            return {k: self.record(v, is_personal(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.record(v, personal) for v in value]
        return self.token(value) if personal else _jsonable(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def audit_inspect(
    bootstrap: str,
    codec: Codec,
    actor: str,
    purpose: str,
    detail: dict[str, Any],
    producer_factory: Callable[[dict[str, Any]], Any] = Producer,
    timeout_s: float = 30.0,
) -> None:
    """One ``inspect_topic`` record on ``audit.log``; returns once the broker acknowledged it."""
    record = audit_record(
        int(time.time() * 1000), actor, "inspect_topic", None, purpose, "ok", detail
    )
    producer = producer_factory(producer_config(bootstrap, **{"client.id": "inspect-audit"}))
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failed.append(err.name())

    producer.produce(AUDIT_TOPIC, value=codec.encode(AUDIT_TOPIC, record), on_delivery=on_delivery)
    left = producer.flush(timeout_s)
    if left or failed:
        raise InspectError(
            f"audit record not written ({', '.join(failed) or 'timed out'}): nothing is shown"
        )


def read_records(
    bootstrap: str,
    topic: str,
    *,
    from_beginning: bool,
    max_records: int | None,
    idle_timeout_s: float | None,
    last: int | None = None,
    partition: int | None = None,
    offset: int | None = None,
    consumer_factory: Callable[[dict[str, Any]], Any] = Consumer,
) -> Iterator[Any]:
    """The topic's records (every partition, or ``partition``), outside any consumer group
    (nothing committed).

    ``from_beginning``, ``last`` (the last N of each partition) or ``offset`` (of
    ``partition``): up to the end offsets as of the start, then stop. Otherwise: records
    written from now on, until ``max_records`` or ``idle_timeout_s`` without a record.
    """
    consumer = consumer_factory(
        client_config(
            bootstrap,
            **{
                "group.id": f"purchase-stream-inspect-{secrets.token_hex(4)}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise InspectError(f"topic {topic} does not exist on {bootstrap}")
        partitions = sorted(meta.partitions)
        if partition is not None:
            if partition not in meta.partitions:
                raise InspectError(f"topic {topic} has no partition {partition}")
            partitions = [partition]
        bounded = from_beginning or last is not None or offset is not None
        starts: dict[int, int] = {}
        pending = set(partitions)
        for p in partitions:
            if not bounded:
                starts[p] = OFFSET_END
                continue
            low, high = consumer.get_watermark_offsets(TP(topic, p), timeout=10)
            if offset is not None:
                starts[p] = max(low, offset)
            elif last is not None:
                starts[p] = max(low, high - last)
            else:
                starts[p] = OFFSET_BEGINNING
            start = low if starts[p] == OFFSET_BEGINNING else starts[p]
            if start >= high:
                pending.discard(p)  # nothing to read: no end-of-partition event will come
        consumer.assign([TP(topic, p, starts[p]) for p in partitions])
        seen = 0
        quiet_since = time.monotonic()
        while pending or not bounded:
            if max_records is not None and seen >= max_records:
                return
            if idle_timeout_s is not None and time.monotonic() - quiet_since > idle_timeout_s:
                return
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise InspectError(f"reading {topic}: {err.name()}")
            quiet_since = time.monotonic()
            seen += 1
            yield msg
    finally:
        consumer.close()


def render(codec: Codec, masker: Masker, msg: Any) -> dict[str, Any]:
    """One record as a JSON-ready dict, ids masked unless revealing."""
    topic = msg.topic()
    key = msg.key()
    try:
        key_out: Any = None if key is None else key.decode("utf-8")
    except UnicodeDecodeError:
        key_out = key
    try:
        if TOPICS[topic].packed:
            # A pack (stream/engine/packing.py): its elements, each with its own key.
            pairs = codec.decode_pack(topic, msg.value(), key_out)
            value: Any = [{"key": masker.token(k), "value": masker.record(v)} for k, v in pairs]
        else:
            value = masker.record(codec.decode(topic, msg.value()))
        error = None
    except DecodeError as exc:
        value, error = None, exc.code  # the code only: the bytes may hold an id
    _ts_type, ts = msg.timestamp()
    out: dict[str, Any] = {
        "topic": topic,
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": ts,
        "key": masker.token(key_out),
        "value": value,
    }
    if error is not None:
        out["error"] = error
    return out


def inspect_topic(
    bootstrap: str,
    codec: Codec,
    topic: str,
    out: TextIO,
    *,
    from_beginning: bool = False,
    max_records: int | None = None,
    idle_timeout_s: float | None = None,
    last: int | None = None,
    partition: int | None = None,
    offset: int | None = None,
    reveal: bool = False,
    actor: str,
    purpose: str,
) -> int:
    """Audit, then print the records as JSON lines; returns how many were printed."""
    if topic not in TOPICS:
        raise InspectError(f"unknown topic {topic!r}; known: {', '.join(sorted(TOPICS))}")
    audit_inspect(
        bootstrap,
        codec,
        actor,
        purpose,
        {
            "topic": topic,
            "revealed": reveal,
            "from_beginning": from_beginning,
            "max": max_records,
            **({"last": last} if last is not None else {}),
            **({"partition": partition} if partition is not None else {}),
            **({"offset": offset} if offset is not None else {}),
        },
    )
    masker = Masker(reveal=reveal)
    n = 0
    for msg in read_records(
        bootstrap,
        topic,
        from_beginning=from_beginning,
        max_records=max_records,
        idle_timeout_s=idle_timeout_s,
        last=last,
        partition=partition,
        offset=offset,
    ):
        out.write(json.dumps(render(codec, masker, msg), ensure_ascii=False) + "\n")
        out.flush()
        n += 1
    return n
