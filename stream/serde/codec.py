"""Bytes <-> records for every topic: Confluent wire-format Avro, or JSON for internal topics.

The encoding of each topic comes from :mod:`stream.local.topics`. Avro values are in the Confluent
wire format -- ``b"\\x00"``, the writer schema id as 4 big-endian bytes, then the schemaless
Avro body -- so any Confluent/Karapace-aware consumer can read the outputs. The subject is
``<topic>-value`` (the default TopicNameStrategy); it is registered on first encode per topic.

Decoding looks the writer schema up by the id in the bytes and reads with the project's current
schema for the topic (the reader schema), so records written with an older or newer version of
a schema decode as long as the two are compatible in Avro's schema-resolution sense (fields
added or removed with defaults). Records are plain dicts; timestamps are ``int`` epoch millis
(see :mod:`stream.serde.schemas`).

Errors:

- :class:`DecodeError` is the only exception bad input bytes can cause; its ``code`` is a
  bounded reason (``undecodable``, ``unknown_schema_id``, ``schema_mismatch``) for the dead
  letter and the metric label.
- :class:`EncodeError` (a ``ValueError``) means the record does not fit the topic's schema.
- A :class:`stream.serde.registry_store.RegistryError` other than "not found" (registry down)
  propagates from both: it is not the record's fault, so it must not dead-letter the record.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Mapping
from typing import Any

import orjson
from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from stream.local.topics import TOPICS, spec
from stream.serde import schemas
from stream.serde.avro_compiled import Decoder, Encoder, Truncated, compile_schema
from stream.serde.registry_store import SchemaNotFoundError, SchemaRegistry

UNDECODABLE = "undecodable"
UNKNOWN_SCHEMA_ID = "unknown_schema_id"
SCHEMA_MISMATCH = "schema_mismatch"
DECODE_ERROR_CODES = (UNDECODABLE, UNKNOWN_SCHEMA_ID, SCHEMA_MISMATCH)

MAGIC = 0
HEADER_SIZE = 5
# How long an id the registry did not know is answered from memory: a burst of records with a
# garbage id must not become a burst of registry requests, yet an id registered a moment later
# (by a producer that raced ahead of a lagging registry replica) must become readable.
UNKNOWN_ID_TTL_S = 30.0


class DecodeError(Exception):
    """Bytes that cannot be turned into a record. ``code`` is one of :data:`DECODE_ERROR_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EncodeError(ValueError):
    """A record that does not match its topic's schema (or is not JSON-serialisable)."""


class _Reader:
    """Everything needed to decode one (topic, writer schema id) pair, prepared once."""

    __slots__ = ("fast", "reader_schema", "writer_schema")

    def __init__(self, writer_schema: dict[str, Any], reader_schema: dict[str, Any] | None):
        self.writer_schema = writer_schema
        # None when writer and reader schemas are identical: fastavro then skips schema
        # resolution, and skips its own deep ``writer == reader`` comparison on every call.
        self.reader_schema = reader_schema
        # Identical schemas (the usual case) are read by a decoder compiled for the schema
        # (stream/serde/avro_compiled.py); resolving between two versions stays with fastavro.
        self.fast: Decoder | None = None
        if reader_schema is None:
            compiled = compile_schema(writer_schema)
            self.fast = compiled[1] if compiled else None


class _AvroWriter:
    __slots__ = ("fast", "header", "schema")

    def __init__(self, header: bytes, schema: dict[str, Any]) -> None:
        self.header = header
        self.schema = schema
        compiled = compile_schema(schema)
        self.fast: Encoder | None = compiled[0] if compiled else None


class Codec:
    """Encodes and decodes the values and keys of the topics in :mod:`stream.local.topics`.

    Cheap after warm-up: schema ids, parsed writer schemas and the reader prepared for each
    (topic, schema id) are cached, so a decode is a dict look-up plus fastavro's read.
    """

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self._writers: dict[str, _AvroWriter] = {}
        self._readers: dict[tuple[str, int], _Reader] = {}
        self._writer_schemas: dict[int, dict[str, Any]] = {}  # schema id -> parsed (plain)
        self._unknown_ids: dict[int, float] = {}  # schema id -> monotonic time of the miss
        self._avro_topics: dict[str, bool] = {}

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def encode_key(key: str | None) -> bytes | None:
        return None if key is None else key.encode("utf-8")

    @staticmethod
    def decode_key(data: bytes | None) -> str | None:
        if data is None:
            return None
        try:
            return bytes(data).decode("utf-8")
        except (TypeError, UnicodeDecodeError) as exc:
            raise DecodeError(UNDECODABLE, f"key is not UTF-8 text: {exc}") from None

    # -- values -------------------------------------------------------------------------------

    def _is_avro(self, topic: str) -> bool:
        avro = self._avro_topics.get(topic)
        if avro is None:
            s = spec(topic)  # KeyError for an unknown topic: a programming error, not bad data
            if s.encoding not in ("avro", "json"):
                raise ValueError(f"topic {topic}: unknown encoding {s.encoding!r}")
            avro = self._avro_topics[topic] = s.encoding == "avro"
        return avro

    def subject(self, topic: str) -> str:
        return f"{topic}-value"

    def _writer(self, topic: str) -> _AvroWriter:
        w = self._writers.get(topic)
        if w is None:
            fullname = spec(topic).schema
            if fullname is None:
                raise ValueError(f"topic {topic} is Avro but names no schema")
            sid = self.registry.register(self.subject(topic), schemas.schema_text(fullname))
            w = self._writers[topic] = _AvroWriter(
                bytes([MAGIC]) + sid.to_bytes(4, "big"), schemas.schema(fullname)
            )
        return w

    def schema_id(self, topic: str) -> int:
        """The id this codec writes ``topic`` with (registering the schema if needed)."""
        return int.from_bytes(self._writer(topic).header[1:], "big")

    def register_all(self) -> dict[str, int]:
        """Register every Avro topic's schema now (fail fast at start-up); topic -> id."""
        return {t: self.schema_id(t) for t in _avro_topic_names()}

    def warm(self) -> int:
        """Register every Avro topic's schema and prepare its encoder and the decoder of
        records written with that same schema; returns the number of topics.

        Otherwise each is registered and compiled on its first record (~70 ms of code
        generation for the 16 schemas, and a registry request per schema and direction),
        all inside the first batch after a start. The writer schema of an id this codec
        has just registered is its own text, so no schema is fetched (a registry replica
        that has not seen the id yet cannot make it "unknown" here). Raises what the
        registry raises on registration; records of other schema ids still load lazily.
        """
        ids = self.register_all()
        for topic, sid in ids.items():
            fullname = _schema_name(topic)
            self._writer_schemas.setdefault(sid, schemas.parse_plain(schemas.schema_text(fullname)))
            if (topic, sid) not in self._readers:
                self._prepare_reader(topic, sid)
        return len(ids)

    def encode(self, topic: str, value: Mapping[str, Any] | None) -> bytes | None:
        """The value bytes for ``topic``; ``None`` stays ``None`` (a tombstone)."""
        if value is None:
            return None
        if not self._is_avro(topic):
            try:
                return orjson.dumps(value)
            except TypeError as exc:
                raise EncodeError(f"{topic}: value is not JSON-serialisable: {exc}") from exc
        w = self._writer(topic)
        try:
            if w.fast is not None:
                return w.fast(value, w.header)
            out = io.BytesIO()
            out.write(w.header)
            schemaless_writer(out, w.schema, value)
            return out.getvalue()
        except (
            TypeError,
            ValueError,
            AttributeError,
            KeyError,
            OverflowError,
            struct.error,
        ) as exc:
            raise EncodeError(self._explain(topic, w.schema, value, exc)) from exc

    @staticmethod
    def _explain(topic: str, schema: dict[str, Any], value: Any, exc: Exception) -> str:
        # fastavro's writer messages name the field only sometimes; its validator always gives
        # the path (e.g. fi.coop.purchase.Receipt.lines.gtin). Only run on the error path.
        if not isinstance(value, dict):
            return f"{topic}: value must be a dict, not {type(value).__name__}"
        try:
            validate(value, schema, raise_errors=True)
        except ValidationError as verr:
            problems = "; ".join(
                f"{e.field} is {e.datum!r} ({type(e.datum).__name__}), expected {e.schema}"
                for e in verr.errors[:5]
            )
            return f"{topic}: record does not match {schema['name']}: {problems}"
        except Exception:  # noqa: BLE001, S110 - best effort; fall back to fastavro's own message
            pass
        return f"{topic}: record does not match {schema['name']}: {exc}"

    def decode_pack(
        self, topic: str, data: bytes | bytearray | memoryview | None, key: str | None
    ) -> list[tuple[str | None, dict[str, Any] | None]]:
        """The ``(key, record)`` elements of a value of a packed topic (``TopicSpec.packed``).

        A pack is a JSON array of ``[key, record]`` elements (stream/engine/packing.py); a
        value that is not an array is one record with the record's own ``key``, as written
        before packing existed and for packs of one.
        """
        if data is None or bytes(data[:1]) != b"[":
            return [(key, self.decode(topic, data))]
        try:
            items: list[Any] = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(UNDECODABLE, f"{topic}: not JSON: {exc}") from None
        if not items or not all(
            isinstance(i, list) and len(i) == 2 and isinstance(i[0], str) and isinstance(i[1], dict)
            for i in items
        ):
            raise DecodeError(
                UNDECODABLE, f"{topic}: a pack is a non-empty array of [key, object] pairs"
            )
        return [(k, v) for k, v in items]

    def decode(
        self, topic: str, data: bytes | bytearray | memoryview | None
    ) -> dict[str, Any] | None:
        """The record in ``data``; ``None`` (a tombstone) stays ``None``.

        Raises :class:`DecodeError` for any bytes that are not a record of this topic.
        """
        if data is None:
            return None
        if type(data) is not bytes:
            if not isinstance(data, bytearray | memoryview):
                raise DecodeError(
                    UNDECODABLE, f"{topic}: value is {type(data).__name__}, not bytes"
                )
            data = bytes(data)
        if not self._is_avro(topic):
            return _decode_json(topic, data)
        if len(data) < HEADER_SIZE or data[0] != MAGIC:
            if not data:
                what = "empty value"
            elif data[0] != MAGIC:
                what = f"magic byte {data[0]}, expected {MAGIC}"
            else:
                what = f"{len(data)} bytes, shorter than the 5-byte header"
            raise DecodeError(UNDECODABLE, f"{topic}: not Confluent wire-format Avro ({what})")
        sid = int.from_bytes(data[1:HEADER_SIZE], "big")
        reader = self._readers.get((topic, sid))
        if reader is None:
            reader = self._prepare_reader(topic, sid)
        try:
            if reader.fast is not None:
                record, end = reader.fast(data, HEADER_SIZE)
            else:
                fo = io.BytesIO(data)
                fo.seek(HEADER_SIZE)
                record = schemaless_reader(fo, reader.writer_schema, reader.reader_schema)
                end = fo.tell()
        except SchemaResolutionError as exc:
            raise DecodeError(
                SCHEMA_MISMATCH,
                f"{topic}: writer schema id {sid} does not resolve to the topic's schema: {exc}",
            ) from None
        except Exception as exc:  # noqa: BLE001 - bad bytes raise many types
            if isinstance(exc, IndexError | Truncated) or not str(exc):
                why = "the body ends early"
            else:
                why = f"{type(exc).__name__}: {exc}"
            raise DecodeError(
                UNDECODABLE, f"{topic}: Avro body does not match schema id {sid}: {why}"
            ) from None
        if end != len(data):
            # A body that decodes with bytes to spare was written with some other schema.
            raise DecodeError(
                UNDECODABLE,
                f"{topic}: {len(data) - end} bytes left over after the record (schema id {sid})",
            )
        if not isinstance(record, dict):
            raise DecodeError(SCHEMA_MISMATCH, f"{topic}: schema id {sid} is not a record")
        return record

    def _prepare_reader(self, topic: str, sid: int) -> _Reader:
        writer = self._writer_schema(topic, sid)
        fullname = _schema_name(topic)
        ours = schemas.schema(fullname)
        if writer.get("name") != fullname:
            # Avro resolution matches records by name; a foreign record is not a version of
            # ours, even if its fields happen to line up.
            raise DecodeError(
                SCHEMA_MISMATCH,
                f"{topic}: schema id {sid} is {writer.get('name')!r}, expected {fullname}",
            )
        # identical on the wire: read with the writer schema alone
        same = to_parsing_canonical_form(writer) == to_parsing_canonical_form(ours)
        reader = None if same else ours
        prepared = self._readers[(topic, sid)] = _Reader(writer, reader)
        return prepared

    def _writer_schema(self, topic: str, sid: int) -> dict[str, Any]:
        parsed = self._writer_schemas.get(sid)
        if parsed is not None:
            return parsed
        missed = self._unknown_ids.get(sid)
        if missed is not None and time.monotonic() - missed < UNKNOWN_ID_TTL_S:
            raise DecodeError(UNKNOWN_SCHEMA_ID, f"{topic}: schema id {sid} is not registered")
        try:
            text = self.registry.get_schema(sid)
        except SchemaNotFoundError:
            if len(self._unknown_ids) > 10_000:  # garbage ids must not grow memory unbounded
                self._unknown_ids.clear()
            self._unknown_ids[sid] = time.monotonic()
            raise DecodeError(
                UNKNOWN_SCHEMA_ID, f"{topic}: schema id {sid} is not registered"
            ) from None
        try:
            parsed = schemas.parse_plain(text)
        except Exception as exc:  # noqa: BLE001 - whatever a foreign schema text breaks
            raise DecodeError(
                SCHEMA_MISMATCH,
                f"{topic}: schema id {sid} is not a usable Avro record schema: {exc}",
            ) from None
        self._writer_schemas[sid] = parsed
        return parsed


def _schema_name(topic: str) -> str:
    """The full name of ``topic``'s Avro record (ValueError for a topic without one)."""
    name = spec(topic).schema
    if name is None:
        raise ValueError(f"topic {topic!r} has no Avro schema")
    return name


def _decode_json(topic: str, data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(UNDECODABLE, f"{topic}: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DecodeError(
            UNDECODABLE, f"{topic}: JSON value is {type(value).__name__}, not an object"
        )
    return value


def _avro_topic_names() -> list[str]:
    return [name for name, s in TOPICS.items() if s.encoding == "avro"]
