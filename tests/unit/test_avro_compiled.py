"""The compiled Avro codec (stream/serde/avro_compiled.py) against fastavro, byte for byte.

Every project schema, random records drawn from each schema (boundary values included), the
simulator's real records through the replay driver, and the error cases: missing fields,
wrong types, out-of-range numbers, truncated and corrupt bytes, and arrays written in the
block-size form other Avro writers use.
"""

from __future__ import annotations

import io
import math
import random
import struct
from typing import Any

import fastavro
import pytest

from stream.local.topics import TOPICS
from stream.serde import schemas
from stream.serde.avro_compiled import compile_schema
from stream.serde.codec import Codec, DecodeError, EncodeError
from stream.serde.registry_store import InMemoryRegistry
from stream.settings import load_rules
from stream.simulator.config import SimConfig
from stream.simulator.generator import generate
from stream.tools.replay import Driver, encode_event

LONGS = [0, 1, -1, 63, -64, 64, -65, 8191, -8192, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
INTS = [0, 1, -1, 63, -64, 64, -65, 2**31 - 1, -(2**31)]
STRINGS = ["", "a", "x" * 63, "x" * 64, "y" * 300, "Åbo–Turku ä ö €", "😀" * 20]


def _fa_encode(schema: dict[str, Any], record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def _fa_decode(schema: dict[str, Any], body: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(body), schema, None)


def _random_value(t: Any, named: dict[str, Any], rnd: random.Random, depth: int = 0) -> Any:
    if isinstance(t, str) and t in named:
        t = named[t]
    if isinstance(t, dict) and t.get("type") not in ("record", "array"):
        t = t["type"]
    if isinstance(t, list):
        return None if rnd.random() < 0.3 else _random_value(t[1], named, rnd, depth)
    if t == "string":
        return rnd.choice(STRINGS)
    if t == "bytes":
        return bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 1, 70])))
    if t == "long":
        return rnd.choice(LONGS + [rnd.randrange(-(2**40), 2**40)])
    if t == "int":
        return rnd.choice(INTS + [rnd.randrange(-(2**20), 2**20)])
    if t == "boolean":
        return rnd.random() < 0.5
    if t == "double":
        return rnd.choice([0.0, -1.5, 1e300, -1e-300, math.inf, rnd.random()])
    if t["type"] == "array":
        n = rnd.choice([0, 1, 3, 70]) if depth < 2 else 0
        return [_random_value(t["items"], named, rnd, depth + 1) for _ in range(n)]
    return {
        f["name"]: _random_value(f["type"], named, rnd, depth + 1)
        for f in t["fields"]
        if not ("default" in f and rnd.random() < 0.2)  # sometimes left to its default
    }


@pytest.mark.parametrize("name", schemas.names())
def test_every_project_schema_compiles_and_matches_fastavro_on_random_records(name: str) -> None:
    parsed = schemas.schema(name)
    compiled = compile_schema(parsed)
    assert compiled is not None, f"{name} fell back to fastavro"
    encode, decode = compiled
    named = dict(parsed["__named_schemas"])
    rnd = random.Random(name)
    for _ in range(300):
        record = _random_value(parsed, named, rnd)
        body = _fa_encode(parsed, record)
        assert encode(record, b"") == body
        assert encode(record, b"\x00\x00\x00\x00\x07") == b"\x00\x00\x00\x00\x07" + body
        assert decode(body, 0) == (_fa_decode(parsed, body), len(body))
        assert decode(b"HEAD!" + body, 5) == (_fa_decode(parsed, body), len(body) + 5)


def test_the_simulators_records_and_every_output_of_a_replay_match_fastavro() -> None:
    codec = Codec(InMemoryRegistry())
    driver = Driver(load_rules(), None, codec=codec)
    seen: dict[str, list[bytes]] = {}
    driver.sink = lambda out: seen.setdefault(out.topic, []).append(out.value or b"")
    for e in generate(SimConfig(seed=5, households=60, receipts=400)):
        try:
            topic, key, value, ts = encode_event(codec, e)
        except ValueError:
            continue  # the simulator's deliberately broken lines
        seen.setdefault(topic, []).append(value or b"")
        driver.feed(topic, key, value, ts)
    checked = 0
    for topic, values in seen.items():
        name = TOPICS[topic].schema
        if name is None:
            continue
        parsed = schemas.schema(name)
        compiled = compile_schema(parsed)
        assert compiled is not None
        encode, decode = compiled
        for value in values:
            if not value:
                continue
            body = value[5:]
            record = _fa_decode(parsed, body)
            assert decode(value, 5) == (record, len(value))
            assert encode(record, value[:5]) == value
            checked += 1
    assert {"pos.receipts", "personal.line_items", "aggregates.group", "household.bonus"} <= set(
        seen
    )
    assert checked > 1000


SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "t.T",
        "fields": [
            {"name": "s", "type": "string"},
            {"name": "n", "type": "long"},
            {"name": "i", "type": "int"},
            {"name": "d", "type": "double"},
            {"name": "b", "type": "boolean"},
            {"name": "o", "type": ["null", "string"], "default": None},
            {"name": "k", "type": "long", "default": 7},
            {
                "name": "xs",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "t.X",
                        "fields": [{"name": "v", "type": "long"}],
                    },
                },
            },
        ],
    },
    named_schemas={},
)
GOOD = {"s": "a", "n": 5, "i": -3, "d": 1.25, "b": True, "o": "z", "k": 1, "xs": [{"v": 1}]}


def test_defaults_fill_missing_fields_like_fastavro() -> None:
    encode, decode = compile_schema(SCHEMA)  # type: ignore[misc]
    record = {k: v for k, v in GOOD.items() if k not in ("o", "k")}
    assert encode(record, b"") == _fa_encode(SCHEMA, record)
    assert decode(encode(record, b""), 0)[0] == {**record, "o": None, "k": 7}


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("s", None, AttributeError),
        ("s", 5, AttributeError),
        ("n", "5", TypeError),
        ("n", 1.5, TypeError),  # fastavro's writer would truncate it to 1
        ("n", 2**63, OverflowError),
        ("n", -(2**63) - 1, OverflowError),
        ("i", 2**31, OverflowError),
        ("d", "x", ValueError),
        ("xs", [{"v": None}], TypeError),
        ("xs", [5], AttributeError),
    ],
)
def test_values_that_do_not_fit_raise(field: str, value: Any, error: type) -> None:
    encode, _ = compile_schema(SCHEMA)  # type: ignore[misc]
    with pytest.raises(error):
        encode({**GOOD, field: value}, b"")


def test_a_missing_field_without_default_raises_like_fastavro() -> None:
    encode, _ = compile_schema(SCHEMA)  # type: ignore[misc]
    record = {k: v for k, v in GOOD.items() if k != "n"}
    with pytest.raises(ValueError, match="no value and no default for n"):
        encode(record, b"")
    with pytest.raises(ValueError, match="no value and no default for n"):
        _fa_encode(SCHEMA, record)


def test_every_truncation_of_a_body_fails_and_never_returns_a_partial_record() -> None:
    encode, decode = compile_schema(SCHEMA)  # type: ignore[misc]
    body = encode({**GOOD, "s": "x" * 100, "n": 2**40, "xs": [{"v": 1}] * 70}, b"")
    for cut in range(len(body)):
        with pytest.raises((IndexError, EOFError, struct.error, UnicodeDecodeError)):
            decode(body[:cut], 0)


def test_a_bad_union_index_is_an_error() -> None:
    _, decode = compile_schema(SCHEMA)  # type: ignore[misc]
    body = bytearray(_fa_encode(SCHEMA, {**GOOD, "o": None}))
    # s="a" (2 bytes), n, i (1 byte each), d (8), b (1): the union index follows.
    assert body[13] == 0
    body[13] = 4  # index 2
    with pytest.raises(ValueError, match="union index 2"):
        decode(bytes(body), 0)


def test_arrays_in_block_size_form_from_other_writers_decode_like_fastavro() -> None:
    _, decode = compile_schema(SCHEMA)  # type: ignore[misc]
    head = _fa_encode(SCHEMA, {**GOOD, "xs": []})[:-1]  # everything before the array
    # Two blocks: count -2 with a byte size, then count 1, then the end marker.
    xs = bytes([3, 2, 2, 4]) + bytes([2, 6]) + bytes([0])
    body = head + xs
    assert decode(body, 0) == (_fa_decode(SCHEMA, body), len(body))
    assert decode(body, 0)[0]["xs"] == [{"v": 1}, {"v": 2}, {"v": 3}]


def test_unsupported_schemas_fall_back_to_none() -> None:
    enum = fastavro.parse_schema(
        {
            "type": "record",
            "name": "t.E",
            "fields": [{"name": "e", "type": {"type": "enum", "name": "t.C", "symbols": ["A"]}}],
        },
        named_schemas={},
    )
    union = fastavro.parse_schema(
        {"type": "record", "name": "t.U", "fields": [{"name": "u", "type": ["string", "long"]}]},
        named_schemas={},
    )
    assert compile_schema(enum) is None
    assert compile_schema(union) is None


def test_the_codec_reports_compiled_errors_as_before() -> None:
    codec = Codec(InMemoryRegistry())
    total = {
        "receipt_id": "r1",
        "card_number": "c1",
        "customer_id": "u1",
        "household_id": "h1",
        "role": "MEMBER",
        "store_id": "s1",
        "chain": "Prisma",
        "purchased_at": 1,
        "total_cents": 100,
        "bonus_eligible_cents": 100,
        "payment_method": "CARD",
        "original_receipt_id": None,
    }
    data = codec.encode("receipts.totals", total)
    assert data is not None
    assert codec.decode("receipts.totals", data) == total
    with pytest.raises(EncodeError, match="total_cents"):
        codec.encode("receipts.totals", {**total, "total_cents": 1.5})
    with pytest.raises(DecodeError, match="ends early") as exc:
        codec.decode("receipts.totals", data[:-3])
    assert exc.value.code == "undecodable"
    with pytest.raises(DecodeError, match="bytes left over"):
        codec.decode("receipts.totals", data + b"\x00")


LAST_STRING = fastavro.parse_schema(
    {"type": "record", "name": "t.S", "fields": [{"name": "s", "type": "string"}]},
    named_schemas={},
)


@pytest.mark.parametrize("text", ["abcdefghij", "y" * 200])
def test_a_string_cut_short_at_the_end_of_the_body_is_an_error(text: str) -> None:
    _, decode = compile_schema(LAST_STRING)  # type: ignore[misc]
    body = _fa_encode(LAST_STRING, {"s": text})
    assert decode(body, 0) == ({"s": text}, len(body))
    for cut in range(len(body)):
        with pytest.raises((IndexError, EOFError)):
            decode(body[:cut], 0)


@pytest.mark.parametrize("length_byte", [1, 3, 0x7F])
def test_a_negative_string_length_is_an_error_not_a_string(length_byte: int) -> None:
    _, decode = compile_schema(LAST_STRING)  # type: ignore[misc]
    body = bytes([length_byte]) + b"x" * 100
    with pytest.raises(EOFError):
        decode(body, 0)
