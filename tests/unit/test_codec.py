"""The Avro schemas and the codec: wire format, golden bytes, evolution and bad input."""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

from stream.local.topics import TOPICS
from stream.serde import schemas
from stream.serde.codec import (
    SCHEMA_MISMATCH,
    UNDECODABLE,
    UNKNOWN_SCHEMA_ID,
    Codec,
    DecodeError,
    EncodeError,
)
from stream.serde.registry_store import InMemoryRegistry, RegistryUnavailableError

DATA = Path(__file__).parent / "data"
NS = "fi.coop.purchase"
T0 = 1714550400000  # 2024-05-01T08:00:00Z


def line(no: int, **over: Any) -> dict[str, Any]:
    return {
        "line_no": no,
        "gtin": f"64080000{no:05d}",
        "unit": "PCS",
        "quantity_milli": 1000,
        "amount_cents": 199 + no,
        "bonus_eligible": True,
    } | over


def receipt(n_lines: int = 2, **over: Any) -> dict[str, Any]:
    return {
        "receipt_id": "R1",
        "store_id": "S1",
        "chain": "PRISMA",
        "card_number": "6393001",
        "purchased_at": T0,
        "total_cents": 4711,
        "bonus_eligible_cents": 4000,
        "payment_method": "CARD",
        "original_receipt_id": None,
        "lines": [line(i + 1) for i in range(n_lines)],
    } | over


GROUPS = [{"product_group": "dairy", "amount_cents": 389, "quantity_milli": 2000, "line_count": 2}]

# One valid record per topic value schema; every optional field set in at least one of them.
SAMPLES: dict[str, dict[str, Any]] = {
    "household.bonus": {
        "household_id": "H1",
        "month": "2026-11",
        "eligible_cents": 42_500,
        "receipt_count": 7,
        "rate_bp": 250,
        "bonus_cents": 1063,
        "payment_benefit_eligible_cents": 10_000,
        "payment_benefit_cents": 50,
        "members": [{"customer_id": "C1", "eligible_cents": 42_500}],
        "closed": False,
        "updated_at": 1_793_599_200_000,
    },
    "bonus.statements": {
        "household_id": "H1",
        "month": "2026-11",
        "seq": 1,
        "kind": "CORRECTION",
        "eligible_cents": 42_500,
        "rate_bp": 250,
        "bonus_cents": 1063,
        "payment_benefit_eligible_cents": 10_000,
        "payment_benefit_cents": 50,
        "members": [{"customer_id": "C1", "eligible_cents": 42_500}],
        "delta_bonus_cents": -12,
        "delta_payment_benefit_cents": 0,
        "issued_at": 1_793_599_200_000,
    },
    "pos.receipts": receipt(
        3,
        card_number=None,
        original_receipt_id="R0",
        lines=[
            line(1),
            line(2, unit="KG", quantity_milli=453, amount_cents=-120, bonus_eligible=False),
        ],
    ),
    "customer.cards": {
        "card_number": "6393001",
        "customer_id": "C1",
        "household_id": "H1",
        "role": "OWNER",
        "effective_at": T0,
        "version": 3,
    },
    "customer.consents": {
        "customer_id": "C1",
        "version": 7,
        "effective_at": T0,
        "product_level_services": True,
        "marketing_targeting": False,
        "external_audiences": False,
        "direct_marketing": True,
        "e_receipts": True,
        "source": "APP",
    },
    "product.catalog": {
        "gtin": "6408000000001",
        "name": "Maito 1 l",
        "product_group": "dairy",
        "food": True,
        "vegetable": False,
        "origin": "FI",
        "net_weight_grams": 1030,
        "co2e_kg_per_kg": 1.25,
    },
    "receipts.totals": {
        "receipt_id": "R1",
        "card_number": "6393001",
        "customer_id": "C1",
        "household_id": "H1",
        "role": "OWNER",
        "store_id": "S1",
        "chain": "PRISMA",
        "purchased_at": T0,
        "total_cents": -4711,
        "bonus_eligible_cents": 0,
        "payment_method": "CARD",
        "original_receipt_id": "R0",
    },
    "personal.line_items": {
        "customer_id": "C1",
        "receipt_id": "R1",
        "store_id": "S1",
        "chain": "PRISMA",
        "purchased_at": T0,
        "lines": [line(1) | {"product_group": "dairy"}, line(2) | {"product_group": None}],
    },
    "marketing.signals": {
        "customer_id": "C1",
        "receipt_id": "R1",
        "purchased_at": T0,
        "month": "2024-05",
        "groups": GROUPS,
    },
    "ereceipts.archive": {"customer_id": "C1", "receipt": receipt(1)},
    "smobiili.counters": {
        "customer_id": "C1",
        "month": "2024-05",
        "removed": False,
        "food_cents": 1000,
        "finnish_raw_cents": 400,
        "finnish_made_cents": 250,
        "foreign_cents": 300,
        "unknown_origin_cents": 50,
        "food_grams": 2500,
        "vegetable_grams": -150,
        "co2e_grams": 5321,
        "unknown_gtin_lines": 1,
        "line_count": 9,
        "receipt_count": 2,
        "domestic_share_pct": 65.0,
        "finnish_raw_share_pct": 40.0,
        "finnish_made_share_pct": 25.0,
        "foreign_share_pct": 30.0,
        "unknown_origin_share_pct": 5.0,
        "vegetable_share_pct": None,
        "updated_at": T0,
    },
    "aggregates.group": {
        "store_id": "S1",
        "date": "2024-05-01",
        "chain": "PRISMA",
        "receipt_count": 12,
        "total_cents": 99999,
        "groups": GROUPS * 2,
    },
    "recall.requests": {
        "recall_id": "RC-1",
        "gtin": "6410000000001",
        "from_date": "2024-05-01",
        "to_date": "2024-05-31",
        "reason": "Listeria found in batch 42",
        "requested_by": "staff-7",
        "requested_at": T0,
    },
    "recall.notifications": {
        "recall_id": "RC-1",
        "gtin": "6410000000001",
        "customer_id": "C1",
        "card_numbers": ["6393001"],
        "receipts": [{"receipt_id": "R1", "purchased_at": T0}],
        "reason": "Listeria found in batch 42",
        "requested_at": T0,
    },
    "audit.log": {
        "at": T0,
        "actor": "purger",
        "action": "purge",
        "subject_customer_id": "C1",
        "purpose": "personal",
        "outcome": "ok",
        "detail": '{"deleted": 3}',
    },
    "deadletters": {
        "stage": "decode",
        "topic": "pos.receipts",
        "partition": 3,
        "offset": 2**40,
        "reason": "undecodable",
        "error": "magic byte 1",
        "key": b"6393001",
        "value": b"\x01\x02\xff",
        "failed_at": T0,
    },
}

AVRO_TOPICS = [name for name, s in TOPICS.items() if s.encoding == "avro"]
JSON_TOPICS = [name for name, s in TOPICS.items() if s.encoding == "json"]


@pytest.fixture
def codec() -> Codec:
    return Codec(InMemoryRegistry())


def frame(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def avro_body(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema, named_schemas={}), record)
    return out.getvalue()


# -- the schemas ----------------------------------------------------------------------------


def test_every_avro_topic_has_a_schema_and_a_sample() -> None:
    assert set(SAMPLES) == set(AVRO_TOPICS)
    for topic in AVRO_TOPICS:
        name = TOPICS[topic].schema
        assert name is not None and name in schemas.names()


def test_schema_files_follow_the_naming_rules() -> None:
    avro = Path(schemas.__file__).resolve().parent.parent / "avro"
    assert not list(avro.rglob("__init__.py"))
    for path in avro.rglob("*.avsc"):
        raw = json.loads(path.read_text())
        assert raw["namespace"] == NS
        assert path.parent.relative_to(avro).parts == tuple(NS.split("."))
        assert raw["doc"]


def test_registered_text_is_self_contained_and_keeps_logical_types() -> None:
    text = schemas.schema_text(f"{NS}.EReceipt")
    raw = json.loads(text)
    # Receipt (defined in another file) is inlined, with its nested Line
    receipt_type = raw["fields"][1]["type"]
    assert receipt_type["name"] == f"{NS}.Receipt"
    assert receipt_type["fields"][-1]["type"]["items"]["name"] == f"{NS}.Line"
    purchased_at = next(f for f in receipt_type["fields"] if f["name"] == "purchased_at")
    assert purchased_at["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    fastavro.parse_schema(raw, named_schemas={})  # valid on its own
    # GroupTotal is defined in MarketingSignal.avsc and used by reference in GroupAggregate
    agg = json.loads(schemas.schema_text(f"{NS}.GroupAggregate"))
    assert agg["fields"][-1]["type"]["items"]["name"] == f"{NS}.GroupTotal"


def test_codec_schemas_have_no_logical_types() -> None:
    for name in schemas.names():
        assert "logicalType" not in json.dumps(schemas.schema(name), default=str)


def test_exact_field_names() -> None:
    def fields(name: str) -> list[str]:
        return [f["name"] for f in json.loads(schemas.schema_text(f"{NS}.{name}"))["fields"]]

    assert fields("Receipt") == [
        "receipt_id",
        "store_id",
        "chain",
        "card_number",
        "purchased_at",
        "total_cents",
        "bonus_eligible_cents",
        "payment_method",
        "original_receipt_id",
        "lines",
    ]
    assert fields("Card") == [
        "card_number",
        "customer_id",
        "household_id",
        "role",
        "effective_at",
        "version",
    ]
    assert fields("DeadLetter") == [
        "stage",
        "topic",
        "partition",
        "offset",
        "reason",
        "error",
        "key",
        "value",
        "failed_at",
    ]
    for topic, sample in SAMPLES.items():
        assert fields(str(TOPICS[topic].schema).rsplit(".", 1)[1]) == list(sample), topic


def test_loader_rejects_a_misplaced_schema(tmp_path: Path) -> None:
    target = tmp_path / "fi" / "coop"
    target.mkdir(parents=True)
    (target / "Card.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "Card",
                "namespace": NS,
                "doc": "x",
                "fields": [{"name": "a", "type": "string"}],
            }
        )
    )
    with pytest.raises(schemas.SchemaLoadError, match="expected fi.coop.Card"):
        schemas.SchemaSet.load(tmp_path)


def test_loader_rejects_an_unknown_reference(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.mkdir()
    (target / "A.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "A",
                "namespace": "x",
                "doc": "x",
                "fields": [{"name": "b", "type": "x.Missing"}],
            }
        )
    )
    with pytest.raises(schemas.SchemaLoadError, match="x.Missing"):
        schemas.SchemaSet.load(tmp_path)


# -- round trips and golden bytes -----------------------------------------------------------


@pytest.mark.parametrize("topic", AVRO_TOPICS)
def test_roundtrip_every_avro_topic(codec: Codec, topic: str) -> None:
    data = codec.encode(topic, SAMPLES[topic])
    assert data is not None and data[0] == 0
    assert int.from_bytes(data[1:5], "big") == codec.schema_id(topic)
    assert codec.decode(topic, data) == SAMPLES[topic]


@pytest.mark.parametrize("topic", JSON_TOPICS)
def test_roundtrip_json_topics(codec: Codec, topic: str) -> None:
    value = {"receipt": receipt(1), "card": SAMPLES["customer.cards"], "n": [1, 2.5, None]}
    data = codec.encode(topic, value)
    assert data == json.dumps(value, separators=(",", ":")).encode()
    assert codec.decode(topic, data) == value


def test_golden_card(codec: Codec) -> None:
    data = codec.encode(
        "customer.cards",
        {
            "card_number": "6393001",
            "customer_id": "C1",
            "household_id": "H1",
            "role": "OWNER",
            "effective_at": None,
            "version": 5,
        },
    )
    # magic 0, schema id 1 (fresh registry), then each string as zigzag-varint length + UTF-8,
    # then the unions: branch 0 (null) for effective_at, branch 1 (long) and zigzag 5 = 10.
    assert data == (b"\x00\x00\x00\x00\x01\x0e6393001\x04C1\x04H1\x0aOWNER\x00\x02\x0a")


def test_golden_receipt(codec: Codec) -> None:
    codec.encode("customer.cards", SAMPLES["customer.cards"])  # takes id 1
    value = {
        "receipt_id": "R1",
        "store_id": "S1",
        "chain": "K",
        "card_number": None,
        "purchased_at": T0,
        "total_cents": -150,
        "bonus_eligible_cents": 150,
        "payment_method": "CASH",
        "original_receipt_id": "R0",
        "lines": [
            {
                "line_no": 1,
                "gtin": "64",
                "unit": "KG",
                "quantity_milli": 250,
                "amount_cents": -150,
                "bonus_eligible": True,
            }
        ],
    }
    data = codec.encode("pos.receipts", value)
    expected = [
        "00 00000002",  # magic, schema id 2
        "04 5231  04 5331  02 4b",  # "R1", "S1", "K": zigzag-varint length + UTF-8
        "00",  # card_number: union branch 0 (null)
        "80 90 d7 b2 e6 63",  # purchased_at 1714550400000 as zigzag varint
        "ab02  ac02",  # total_cents -150, bonus_eligible_cents 150
        "08 43415348",  # "CASH"
        "02 04 5230",  # original_receipt_id: union branch 1, "R0"
        "02",  # array block of 1 item
        "02  04 3634  04 4b47  f403  ab02  01",  # line 1, "64", "KG", 250, -150, true
        "00",  # end of array
    ]
    assert data == bytes.fromhex("".join(expected).replace(" ", ""))
    assert codec.decode("pos.receipts", data) == value


def test_timestamps_decode_as_plain_int(codec: Codec) -> None:
    for topic, field in [
        ("pos.receipts", "purchased_at"),
        ("customer.consents", "effective_at"),
        ("audit.log", "at"),
        ("deadletters", "failed_at"),
    ]:
        decoded = codec.decode(topic, codec.encode(topic, SAMPLES[topic]))
        assert decoded is not None
        assert type(decoded[field]) is int and decoded[field] == T0


def test_timestamps_are_real_timestamps_for_other_consumers(codec: Codec) -> None:
    # A consumer honouring logicalType (the registered text) sees the same instant.
    data = codec.encode("pos.receipts", SAMPLES["pos.receipts"])
    assert data is not None
    registered = fastavro.parse_schema(
        json.loads(codec.registry.get_schema(codec.schema_id("pos.receipts")))
    )
    decoded = fastavro.schemaless_reader(io.BytesIO(data[5:]), registered)
    assert isinstance(decoded, dict)
    assert decoded["purchased_at"] == datetime(2024, 5, 1, 8, tzinfo=UTC)


def test_schema_is_registered_once_per_topic() -> None:
    registry = InMemoryRegistry()
    codec = Codec(registry)
    for _ in range(3):
        codec.encode("pos.receipts", receipt())
    assert registry.subjects() == ["pos.receipts-value"]
    assert registry.versions("pos.receipts-value") == [1]
    # a second codec (another process) on the same registry writes the same id
    assert Codec(registry).schema_id("pos.receipts") == codec.schema_id("pos.receipts")


def test_register_all(codec: Codec) -> None:
    ids = codec.register_all()
    assert set(ids) == set(AVRO_TOPICS)
    assert len(set(ids.values())) == len(ids)  # every topic has its own record type


class CountingRegistry:
    """An in-memory registry that counts the calls made to it."""

    def __init__(self) -> None:
        self.inner = InMemoryRegistry()
        self.calls: list[str] = []
        self.down = False

    def register(self, subject: str, schema_text: str) -> int:
        self.calls.append("register")
        if self.down:
            raise RegistryUnavailableError("down")
        return self.inner.register(subject, schema_text)

    def get_schema(self, schema_id: int) -> str:
        self.calls.append("get_schema")
        if self.down:
            raise RegistryUnavailableError("down")
        return self.inner.get_schema(schema_id)


def test_warm_leaves_no_registry_call_for_the_first_records() -> None:
    # Another process (the POS gateway) wrote the records with the registry's ids.
    registry = CountingRegistry()
    producer = Codec(registry)
    data = {t: producer.encode(t, SAMPLES[t]) for t in AVRO_TOPICS}
    cold = Codec(registry)
    registry.calls.clear()
    cold.decode("pos.receipts", data["pos.receipts"])
    assert registry.calls  # without warm(): the first record asks the registry

    registry.calls.clear()
    codec = Codec(registry)
    assert codec.warm() == len(AVRO_TOPICS)
    # one registration per topic; its own schema text is not fetched back
    assert registry.calls == ["register"] * len(AVRO_TOPICS)
    registry.calls.clear()
    for t in AVRO_TOPICS:
        assert codec.decode(t, data[t]) == SAMPLES[t]
        assert codec.encode(t, SAMPLES[t]) == data[t]
    assert registry.calls == []


def test_warm_codec_at_start_survives_a_registry_outage(caplog: pytest.LogCaptureFixture) -> None:
    from stream.engine.worker import warm_codec

    registry = CountingRegistry()
    registry.down = True
    codec = Codec(registry)
    with caplog.at_level("WARNING", logger="stream.engine.worker"):
        warm_codec(codec)  # does not raise: the records load their schemas on first use
    assert "schemas not prepared at start-up" in caplog.text
    registry.down = False
    data = codec.encode("pos.receipts", receipt())
    assert codec.decode("pos.receipts", data) == receipt()


# -- tombstones and keys --------------------------------------------------------------------


@pytest.mark.parametrize("topic", list(TOPICS))
def test_tombstones(codec: Codec, topic: str) -> None:
    assert codec.encode(topic, None) is None
    assert codec.decode(topic, None) is None


def test_keys(codec: Codec) -> None:
    assert codec.encode_key("C1/R1") == b"C1/R1"
    assert codec.encode_key("Äänekoski|2024-05-01") == "Äänekoski|2024-05-01".encode()
    assert codec.decode_key("Äänekoski".encode()) == "Äänekoski"
    assert codec.encode_key(None) is None and codec.decode_key(None) is None
    with pytest.raises(DecodeError) as err:
        codec.decode_key(b"\xff\xfe")
    assert err.value.code == UNDECODABLE


# -- encode errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"total_cents": "12"}, "total_cents"),
        ({"card_number": 5}, "card_number"),
        ({"purchased_at": datetime(2024, 5, 1, tzinfo=UTC)}, "purchased_at"),
        ({"lines": [line(1, gtin=6408)]}, "gtin"),
    ],
)
def test_encode_error_names_topic_and_field(
    codec: Codec, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(EncodeError, match=rf"pos\.receipts.*{field}"):
        codec.encode("pos.receipts", receipt() | change)


def test_encode_error_for_a_missing_field(codec: Codec) -> None:
    value = receipt()
    del value["store_id"]
    with pytest.raises(EncodeError, match="store_id"):
        codec.encode("pos.receipts", value)
    assert issubclass(EncodeError, ValueError)


def test_optional_fields_may_be_left_out(codec: Codec) -> None:
    value = receipt()
    del value["card_number"], value["original_receipt_id"]
    decoded = codec.decode("pos.receipts", codec.encode("pos.receipts", value))
    assert decoded == value | {"card_number": None, "original_receipt_id": None}


def test_encode_error_for_unserialisable_json(codec: Codec) -> None:
    with pytest.raises(EncodeError, match="receipts.identified"):
        codec.encode("receipts.identified", {"x": object()})


def test_unknown_topic_is_a_programming_error(codec: Codec) -> None:
    with pytest.raises(KeyError):
        codec.encode("no.such.topic", {})


# -- decode errors --------------------------------------------------------------------------


def decode_error(codec: Codec, topic: str, data: Any) -> DecodeError:
    with pytest.raises(DecodeError) as err:
        codec.decode(topic, data)
    return err.value


def test_bad_magic_byte(codec: Codec) -> None:
    data = codec.encode("customer.cards", SAMPLES["customer.cards"])
    assert data is not None
    err = decode_error(codec, "customer.cards", b"\x01" + data[1:])
    assert err.code == UNDECODABLE and "magic byte 1" in str(err)


def test_json_on_an_avro_topic(codec: Codec) -> None:
    err = decode_error(codec, "pos.receipts", json.dumps(receipt()).encode())
    assert err.code == UNDECODABLE and "magic byte 123" in str(err)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00\x00\x01"])
def test_shorter_than_the_header(codec: Codec, data: bytes) -> None:
    assert decode_error(codec, "pos.receipts", data).code == UNDECODABLE


def test_truncated_body_at_every_length(codec: Codec) -> None:
    data = codec.encode("pos.receipts", SAMPLES["pos.receipts"])
    assert data is not None
    for cut in range(len(data)):
        assert decode_error(codec, "pos.receipts", data[:cut]).code == UNDECODABLE, cut


def test_huge_array_count_fails_fast(codec: Codec) -> None:
    # a corrupt block count must not make the reader allocate or loop for ages
    value = receipt(0)
    data = codec.encode("pos.receipts", value)
    assert data is not None and data.endswith(b"\x00")  # empty array: a single 0 block
    huge = bytes.fromhex("feffffffffffffff7f")  # zigzag varint of 2**62 - 1
    err = decode_error(codec, "pos.receipts", data[:-1] + huge + b"\x02\x0464")
    assert err.code == UNDECODABLE


def test_trailing_bytes(codec: Codec) -> None:
    data = codec.encode("customer.cards", SAMPLES["customer.cards"])
    assert data is not None
    err = decode_error(codec, "customer.cards", data + b"\x00")
    assert err.code == UNDECODABLE and "left over" in str(err)


def test_invalid_utf8_in_a_string(codec: Codec) -> None:
    sid = codec.schema_id("customer.cards")
    err = decode_error(codec, "customer.cards", frame(sid, b"\x04\xff\xfe\x00\x00\x00"))
    assert err.code == UNDECODABLE


def test_unknown_schema_id(codec: Codec) -> None:
    data = codec.encode("customer.cards", SAMPLES["customer.cards"])
    assert data is not None
    for _ in range(2):  # the second miss is answered from the negative cache
        err = decode_error(codec, "customer.cards", frame(999, data[5:]))
        assert err.code == UNKNOWN_SCHEMA_ID and "999" in str(err)


def test_schema_id_of_another_record_type(codec: Codec) -> None:
    card = codec.encode("customer.cards", SAMPLES["customer.cards"])
    assert card is not None
    err = decode_error(codec, "pos.receipts", card)
    assert err.code == SCHEMA_MISMATCH and "fi.coop.purchase.Card" in str(err)


def test_incompatible_writer_schema() -> None:
    # a "Receipt" without payment_method, which the reader needs and has no default for
    registry = InMemoryRegistry()
    codec = Codec(registry)
    raw = json.loads(schemas.schema_text(f"{NS}.Receipt"))
    raw["fields"] = [f for f in raw["fields"] if f["name"] != "payment_method"]
    sid = registry.register("pos.receipts-value", json.dumps(raw))
    value = {k: v for k, v in receipt().items() if k != "payment_method"}
    err = decode_error(codec, "pos.receipts", frame(sid, avro_body(raw, value)))
    assert err.code == SCHEMA_MISMATCH and "payment_method" in str(err)


@pytest.mark.parametrize("data", ["text", 5, [0, 0, 0, 0, 1], {"a": 1}])
def test_non_bytes(codec: Codec, data: Any) -> None:
    assert decode_error(codec, "pos.receipts", data).code == UNDECODABLE
    assert decode_error(codec, "receipts.identified", data).code == UNDECODABLE


def test_bytearray_and_memoryview_are_bytes(codec: Codec) -> None:
    data = codec.encode("customer.cards", SAMPLES["customer.cards"])
    assert data is not None
    assert codec.decode("customer.cards", bytearray(data)) == SAMPLES["customer.cards"]
    assert codec.decode("customer.cards", memoryview(data)) == SAMPLES["customer.cards"]


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b"\xff", b""])
def test_bad_json(codec: Codec, data: bytes) -> None:
    assert decode_error(codec, "aggregates.contributions", data).code == UNDECODABLE


def test_random_corruption_raises_only_decode_error(codec: Codec) -> None:
    rng = random.Random(20240501)
    originals = [d for t in AVRO_TOPICS if (d := codec.encode(t, SAMPLES[t])) is not None]
    decoded = 0
    for i in range(3000):
        topic = AVRO_TOPICS[i % len(AVRO_TOPICS)]
        data = bytearray(originals[i % len(originals)])
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(5, len(data))  # keep the header: exercise the Avro reader
            data[pos] = rng.randrange(256)
        try:
            value = codec.decode(topic, bytes(data))
        except DecodeError as exc:
            assert exc.code in (UNDECODABLE, SCHEMA_MISMATCH)
        else:
            assert isinstance(value, dict)
            decoded += 1
    assert decoded < 3000


# -- schema evolution -----------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / name).read_text())
    return loaded


def test_record_written_with_the_previous_version_still_reads() -> None:
    # Receipt.previous.avsc has no original_receipt_id; records written with it must decode
    # with the current schema, the missing optional field taking its default.
    registry = InMemoryRegistry()
    codec = Codec(registry)
    previous = load("Receipt.previous.avsc")
    old_id = registry.register("pos.receipts-value", json.dumps(previous))
    old_value = {k: v for k, v in receipt().items() if k != "original_receipt_id"}
    decoded = codec.decode("pos.receipts", frame(old_id, avro_body(previous, old_value)))
    assert decoded == old_value | {"original_receipt_id": None}
    # and the current schema is a new version of the same subject
    assert codec.schema_id("pos.receipts") != old_id
    assert registry.versions("pos.receipts-value") == [1, 2]


def test_running_worker_reads_records_of_a_newer_schema_version() -> None:
    # A worker started with the current schema keeps working when producers switch to a
    # version with extra optional fields (top level and in Line): the fields are ignored.
    registry = InMemoryRegistry()
    worker = Codec(registry)
    current = worker.encode("pos.receipts", receipt())
    assert worker.decode("pos.receipts", current) == receipt()  # warm: current id cached
    newer = load("Receipt.next.avsc")
    new_id = registry.register("pos.receipts-value", json.dumps(newer))
    new_value = receipt() | {
        "pos_terminal_id": "T7",
        "lines": [line(1, discount_cents=20), line(2)],
    }
    decoded = worker.decode("pos.receipts", frame(new_id, avro_body(newer, new_value)))
    assert decoded == receipt()
    assert registry.versions("pos.receipts-value") == [1, 2]


def test_newer_reader_reads_records_written_with_the_current_schema(codec: Codec) -> None:
    # The other half of full compatibility: after the upgrade, old records in the topic
    # still decode with the newer schema, the added fields taking their defaults.
    data = codec.encode("pos.receipts", receipt())
    assert data is not None
    newer = schemas.parse_plain(json.dumps(load("Receipt.next.avsc")))
    writer = schemas.schema(f"{NS}.Receipt")
    decoded = fastavro.schemaless_reader(io.BytesIO(data[5:]), writer, newer)
    expected = receipt() | {
        "pos_terminal_id": None,
        "lines": [line(1, discount_cents=None), line(2, discount_cents=None)],
    }
    assert decoded == expected


def test_evolution_data_differs_from_the_live_schema_only_by_optional_fields() -> None:
    live = json.loads(schemas.schema_text(f"{NS}.Receipt"))
    live_fields = {f["name"] for f in live["fields"]}
    for name in ("Receipt.previous.avsc", "Receipt.next.avsc"):
        other = load(name)
        other_fields = {f["name"]: f for f in other["fields"]}
        for field in live_fields ^ set(other_fields):
            f = other_fields.get(field) or next(x for x in live["fields"] if x["name"] == field)
            assert f["type"][0] == "null" and f["default"] is None, (name, field)
