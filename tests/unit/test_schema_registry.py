"""Schema registries: in-memory, file-persisted, and the embedded Confluent-REST server."""

from __future__ import annotations

import io
import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import fastavro
import pytest

from stream.local.registry_server import EmbeddedRegistryServer
from stream.serde import schemas
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.serde.registry_store import (
    IncompatibleSchemaError,
    InMemoryRegistry,
    InvalidSchemaError,
    RegistryUnavailableError,
    SchemaNotFoundError,
)
from stream.serde.schema_registry import registry_from_url

CARD = schemas.schema_text("fi.coop.purchase.Card")
RECEIPT = schemas.schema_text("fi.coop.purchase.Receipt")
CARD_VALUE = {
    "card_number": "6393001",
    "customer_id": "C1",
    "household_id": "H1",
    "role": "OWNER",
    "effective_at": None,
    "version": None,
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRegistryServer]:
    srv = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "registry.json").start()
    try:
        yield srv
    finally:
        srv.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- InMemoryRegistry -----------------------------------------------------------------------


def test_register_is_idempotent_and_ids_are_global() -> None:
    reg = InMemoryRegistry()
    assert reg.register("customer.cards-value", CARD) == 1
    assert reg.register("customer.cards-value", CARD) == 1
    # same schema with other whitespace / key order is the same schema
    assert reg.register("customer.cards-value", json.dumps(json.loads(CARD), indent=2)) == 1
    assert reg.register("pos.receipts-value", RECEIPT) == 2
    assert reg.register("other-value", CARD) == 1  # same schema, other subject: same id
    assert reg.get_schema(1) == CARD
    assert reg.subjects() == ["customer.cards-value", "other-value", "pos.receipts-value"]
    assert reg.versions("customer.cards-value") == [1]
    latest = reg.get_latest("pos.receipts-value")
    assert (latest.version, latest.id, latest.schema) == (1, 2, RECEIPT)


def test_unknown_id_and_subject() -> None:
    reg = InMemoryRegistry()
    with pytest.raises(SchemaNotFoundError):
        reg.get_schema(1)
    with pytest.raises(KeyError):  # SchemaNotFoundError is also a KeyError
        reg.get_latest("nope-value")


def test_invalid_schema_is_refused() -> None:
    reg = InMemoryRegistry()
    with pytest.raises(InvalidSchemaError):
        reg.register("x-value", "{not json")
    with pytest.raises(InvalidSchemaError):
        reg.register(
            "x-value",
            json.dumps({"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}),
        )
    assert reg.subjects() == []


def test_file_registry_keeps_ids_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "reg.json"
    reg = InMemoryRegistry(path)
    assert reg.register("customer.cards-value", CARD) == 1
    assert reg.register("pos.receipts-value", RECEIPT) == 2
    again = InMemoryRegistry(path)
    assert again.get_schema(2) == RECEIPT
    assert again.register("pos.receipts-value", RECEIPT) == 2
    assert again.versions("pos.receipts-value") == [1]


def test_file_registry_shared_by_two_processes(tmp_path: Path) -> None:
    # two instances on one file stand for two processes: ids never collide and each sees the
    # other's schemas
    path = tmp_path / "reg.json"
    a, b = InMemoryRegistry(path), InMemoryRegistry(path)
    assert a.register("customer.cards-value", CARD) == 1
    assert b.register("pos.receipts-value", RECEIPT) == 2
    assert a.get_schema(2) == RECEIPT
    assert b.register("customer.cards-value", CARD) == 1


def test_registry_from_url(tmp_path: Path) -> None:
    assert isinstance(registry_from_url("memory://"), InMemoryRegistry)
    # like confluent-kafka's mock://, one registry per URL per process
    assert registry_from_url("mock://t1") is registry_from_url("mock://t1")
    assert registry_from_url("mock://t1") is not registry_from_url("mock://t2")
    file_reg = registry_from_url(f"file://{tmp_path}/r.json")
    assert isinstance(file_reg, InMemoryRegistry) and file_reg.path == tmp_path / "r.json"
    http = registry_from_url("http://registry:8081/")
    assert isinstance(http, ConfluentRegistryClient) and http.url == "http://registry:8081"
    with pytest.raises(ValueError, match="unsupported"):
        registry_from_url("kafka://x")


# -- the embedded server with our client ------------------------------------------------------


def test_http_client_against_embedded_server(server: EmbeddedRegistryServer) -> None:
    client = ConfluentRegistryClient(server.url)
    assert client.register("customer.cards-value", CARD) == 1
    assert client.register("pos.receipts-value", RECEIPT) == 2
    fresh = ConfluentRegistryClient(server.url)  # no cache
    assert fresh.register("customer.cards-value", CARD) == 1
    assert fresh.get_schema(2) == RECEIPT
    assert fresh.subjects() == ["customer.cards-value", "pos.receipts-value"]
    latest = fresh.get_latest("pos.receipts-value")
    assert (latest.subject, latest.version, latest.id) == ("pos.receipts-value", 1, 2)
    with pytest.raises(SchemaNotFoundError):
        fresh.get_schema(99)
    with pytest.raises(SchemaNotFoundError):
        fresh.get_latest("nope-value")
    with pytest.raises(InvalidSchemaError):
        fresh.register("x-value", '{"type": "nope"}')


def test_server_rest_details(server: EmbeddedRegistryServer) -> None:
    ConfluentRegistryClient(server.url).register("a/b-value", CARD)  # subject needing quoting
    with urllib.request.urlopen(f"{server.url}/subjects") as resp:
        assert resp.headers["Content-Type"] == "application/vnd.schemaregistry.v1+json"
        assert json.load(resp) == ["a/b-value"]
    with urllib.request.urlopen(f"{server.url}/subjects/a%2Fb-value/versions") as resp:
        assert json.load(resp) == [1]
    with urllib.request.urlopen(f"{server.url}/subjects/a%2Fb-value/versions/1") as resp:
        assert json.load(resp) == {"subject": "a/b-value", "version": 1, "id": 1, "schema": CARD}
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{server.url}/schemas/ids/7")
    assert err.value.code == 404 and json.load(err.value)["error_code"] == 40403
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{server.url}/nothing/here")
    assert err.value.code == 404


def test_unreachable_registry_is_not_a_missing_schema() -> None:
    client = ConfluentRegistryClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(RegistryUnavailableError):
        client.get_schema(1)
    # a worker must not dead-letter records because the registry is down
    codec = Codec(client)
    with pytest.raises(RegistryUnavailableError):
        codec.decode("customer.cards", b"\x00\x00\x00\x00\x01\x00")


def test_ids_survive_a_server_restart(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    port = free_port()
    with EmbeddedRegistryServer("127.0.0.1", port, path) as first:
        client = ConfluentRegistryClient(first.url)
        assert client.register("customer.cards-value", CARD) == 1
        assert client.register("pos.receipts-value", RECEIPT) == 2
    with EmbeddedRegistryServer("127.0.0.1", port, path) as second:
        client = ConfluentRegistryClient(second.url)
        assert client.get_schema(1) == CARD
        assert client.register("pos.receipts-value", RECEIPT) == 2
        assert (
            client.register(
                "customer.consents-value", schemas.schema_text("fi.coop.purchase.Consent")
            )
            == 3
        )


def test_producer_and_worker_processes_share_ids(server: EmbeddedRegistryServer) -> None:
    # separate codecs and clients, as in the POS producer and a worker
    producer = Codec(ConfluentRegistryClient(server.url))
    worker = Codec(ConfluentRegistryClient(server.url))
    data = producer.encode("customer.cards", CARD_VALUE)
    assert worker.decode("customer.cards", data) == CARD_VALUE


# -- the embedded server with confluent-kafka's client ------------------------------------------


def test_confluent_client_against_embedded_server(server: EmbeddedRegistryServer) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    ours = ConfluentRegistryClient(server.url)
    assert ours.register("customer.cards-value", CARD) == 1
    theirs = SchemaRegistryClient({"url": server.url})
    assert theirs.register_schema("customer.cards-value", Schema(CARD, "AVRO")) == 1
    assert theirs.register_schema("pos.receipts-value", Schema(RECEIPT, "AVRO")) == 2
    assert ours.get_schema(2) == RECEIPT
    fetched = theirs.get_schema(1)
    assert fetched.schema_str == CARD and fetched.schema_type == "AVRO"
    latest = theirs.get_latest_version("pos.receipts-value")
    assert (latest.schema_id, latest.version) == (2, 1)
    assert theirs.lookup_schema("pos.receipts-value", Schema(RECEIPT, "AVRO")).schema_id == 2
    assert sorted(theirs.get_subjects()) == ["customer.cards-value", "pos.receipts-value"]


def test_wire_format_interoperates_with_confluent_serdes(server: EmbeddedRegistryServer) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    ctx = SerializationContext("customer.cards", MessageField.VALUE)
    client = SchemaRegistryClient({"url": server.url})
    codec = Codec(ConfluentRegistryClient(server.url))
    # their serializer -> our codec
    data = AvroSerializer(client, CARD)(CARD_VALUE, ctx)
    assert codec.decode("customer.cards", data) == CARD_VALUE
    # our codec -> their deserializer
    ours = codec.encode("customer.cards", CARD_VALUE)
    assert ours == data
    assert AvroDeserializer(client)(ours, ctx) == CARD_VALUE


# -- the card register's schema evolution (customer.cards gains effective_at and version) -----

DATA = Path(__file__).parent / "data"
CARD_V1 = (DATA / "Card.previous.avsc").read_text()


def test_the_new_card_schema_is_a_backward_compatible_version_of_the_old(server) -> None:
    client = ConfluentRegistryClient(server.url)
    old_id = client.register("customer.cards-value", CARD_V1)
    codec = Codec(client)
    new_id = codec.schema_id("customer.cards")  # registers the current Card schema
    assert new_id != old_id
    assert server.registry.versions("customer.cards-value") == [1, 2]
    # A v1 record (no effective_at, no version) decodes with the new reader: both null, so
    # it is effective at its broker timestamp and ordered by arrival.
    old = {k: CARD_VALUE[k] for k in ("card_number", "customer_id", "household_id", "role")}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(json.loads(CARD_V1)), old)
    framed = b"\x00" + old_id.to_bytes(4, "big") + body.getvalue()
    assert codec.decode("customer.cards", framed) == old | {"effective_at": None, "version": None}


def test_the_registry_refuses_a_version_that_cannot_read_the_old_data(server) -> None:
    client = ConfluentRegistryClient(server.url)
    client.register("customer.cards-value", CARD_V1)
    breaking = json.loads(schemas.schema_text("fi.coop.purchase.Card"))
    del breaking["fields"][-1]["default"]  # a new field without a default: old data lacks it
    breaking["fields"][-1]["type"] = "long"
    with pytest.raises(IncompatibleSchemaError, match="BACKWARD"):
        client.register("customer.cards-value", json.dumps(breaking))
    assert server.registry.versions("customer.cards-value") == [1]


def test_confluents_client_sees_the_compatibility_check(server) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    client = SchemaRegistryClient({"url": server.url})
    client.register_schema("customer.cards-value", Schema(CARD_V1, "AVRO"))
    current = Schema(schemas.schema_text("fi.coop.purchase.Card"), "AVRO")
    assert client.test_compatibility("customer.cards-value", current) is True
    breaking = json.loads(schemas.schema_text("fi.coop.purchase.Card"))
    breaking["fields"][-1] = {"name": "version", "type": "long"}
    assert client.test_compatibility("customer.cards-value", Schema(json.dumps(breaking))) is False


def test_the_clients_httpx_with_and_without_confluent_kafkas_compat_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # confluent-kafka >= 2.13 has _httpx_compat; 2.12 (the Quix peer's environment) has not:
    # the benchmark's peer failed with ModuleNotFoundError on every registry call.
    import sys
    import types

    from confluent_kafka.schema_registry.common import _httpx_compat

    from stream.serde.registry_client import client_httpx

    assert client_httpx() is _httpx_compat.httpx
    plain = types.ModuleType("httpx")
    monkeypatch.setitem(sys.modules, "confluent_kafka.schema_registry.common._httpx_compat", None)
    monkeypatch.setitem(sys.modules, "httpx", plain)
    assert client_httpx() is plain
