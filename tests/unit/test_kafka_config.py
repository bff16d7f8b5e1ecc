"""Kafka TLS/SASL settings are built in one place (stream/kafka_config.py) and reach every
client the project makes: Faust's aiokafka producer and consumers, and every confluent-kafka
producer, consumer and admin client (recorded by stand-in constructors)."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from stream import kafka_config
from stream.kafka_config import KafkaSecurity, client_config
from stream.settings import Settings, load_rules, load_settings
from tests.tls_certs import Certs, make_certs

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "sasl-pa55-never-printed"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def secure_settings(certs: Certs, tmp_path: Path, **env: str) -> Settings:
    return load_settings(
        env={
            "PURCHASE_STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PURCHASE_STREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "PURCHASE_STREAM_KAFKA_SASL_USERNAME": "svc-stream",
            "PURCHASE_STREAM_KAFKA_SASL_PASSWORD": PASSWORD,
            "PURCHASE_STREAM_KAFKA_SSL_CA_FILE": str(certs.ca),
            "PURCHASE_STREAM_STATE_DIR": str(tmp_path / "state"),
            "PURCHASE_STREAM_SCHEMA_REGISTRY_URL": "memory://kafka-config-test",
            **{f"PURCHASE_STREAM_{k.upper()}": v for k, v in env.items()},
        }
    )


@pytest.fixture(autouse=True)
def plaintext_afterwards():
    yield
    kafka_config.configure(load_settings(env={}))  # other tests run PLAINTEXT


EXPECTED = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "svc-stream",
    "sasl.password": PASSWORD,
}


def test_librdkafka_properties_per_protocol(certs: Certs) -> None:
    plain = KafkaSecurity()
    assert plain.librdkafka() == {"security.protocol": "PLAINTEXT"}
    tls = KafkaSecurity(
        protocol="SSL", ca_file=str(certs.ca), cert_file=str(certs.cert), key_file=str(certs.key)
    )
    assert tls.librdkafka() == {
        "security.protocol": "SSL",
        "ssl.ca.location": str(certs.ca),
        "ssl.certificate.location": str(certs.cert),
        "ssl.key.location": str(certs.key),
    }
    sasl = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_username="u")
    assert sasl.librdkafka()["sasl.mechanism"] == "PLAIN"
    assert "ssl.ca.location" not in sasl.librdkafka()
    # the caller's properties cannot downgrade the configured security
    kafka_config._security = KafkaSecurity(protocol="SSL")
    assert client_config("b:1", **{"security.protocol": "PLAINTEXT"})["security.protocol"] == "SSL"


def test_the_security_never_prints(certs: Certs, tmp_path: Path) -> None:
    security = kafka_config.configure(secure_settings(certs, tmp_path))
    assert PASSWORD not in repr(security) and PASSWORD not in str(security)
    assert PASSWORD not in repr(security.faust_credentials())


def test_faust_gets_credentials_and_a_verifying_tls_context(certs: Certs, tmp_path: Path) -> None:
    from faust.auth import SASLCredentials, SSLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    creds = KafkaSecurity.from_settings(secure_settings(certs, tmp_path)).faust_credentials()
    assert isinstance(creds, SASLCredentials)
    # what faust hands aiokafka's consumers and producer (its own conversion)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("svc-stream", PASSWORD)
    context = auth["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # SASL without TLS, TLS without SASL, and nothing
    plain_sasl = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_username="u")
    auth = credentials_to_aiokafka_auth(plain_sasl.faust_credentials())
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["ssl_context"] is None
    tls = KafkaSecurity(protocol="SSL", ca_file=str(certs.ca)).faust_credentials()
    assert isinstance(tls, SSLCredentials)
    assert credentials_to_aiokafka_auth(tls)["security_protocol"] == "SSL"
    assert KafkaSecurity().faust_credentials() is None


class Recorder:
    """Stand-in constructors: record each client's configuration, return a mock client."""

    def __init__(self) -> None:
        self.made: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str) -> Any:
        def make(config: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            self.made.append((kind, dict(config)))
            client = mock.MagicMock(name=kind)
            client.flush.return_value = 0
            return client

        return make


def test_every_client_constructor_gets_the_security(
    certs: Certs, tmp_path: Path, monkeypatch
) -> None:
    import aiokafka
    import confluent_kafka
    import confluent_kafka.admin

    from stream.engine import app as worker_app
    from stream.engine import catalog_feed, output, restore
    from stream.local import clients, reachability
    from stream.serde.codec import Codec
    from stream.serde.schema_registry import registry_from_url
    from stream.serve import live
    from stream.serve.recalls import recall_request
    from stream.simulator import pos
    from stream.tools import topic_view

    bootstrap = "kafka-1:9093"
    settings = secure_settings(certs, tmp_path, broker=bootstrap)
    kafka_config.configure(settings)
    rec = Recorder()
    monkeypatch.setattr(clients, "AdminClient", rec("admin.AdminClient"))
    monkeypatch.setattr(clients, "Consumer", rec("admin.Consumer"))
    monkeypatch.setattr(restore, "Consumer", rec("restore.Consumer"))
    monkeypatch.setattr(output, "Producer", rec("output.Producer"))
    monkeypatch.setattr(confluent_kafka, "Producer", rec("recall Producer"))
    monkeypatch.setattr(confluent_kafka.admin, "AdminClient", rec("broker.AdminClient"))
    aio: list[dict[str, Any]] = []
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", lambda **kw: aio.append(kw))

    codec = Codec(registry_from_url("memory://kafka-config-test"))
    clients.admin_client(bootstrap)  # create_topics, describe, max_message_bytes
    clients.throwaway_consumer(bootstrap)  # group_lag, read_range
    catalog_feed.CatalogFeed(bootstrap, 4)._new_consumer()
    feed = live.LiveFeed(bootstrap, codec, 4)
    feed._stop.set()
    feed._run()  # makes its consumer, then stops at once
    restore.restore_consumer(bootstrap)
    output.Output(bootstrap, "test-output")
    pos.produce([], bootstrap=bootstrap, codec=codec, producer_factory=rec("pos.produce"))
    request = recall_request("6400000000001", "2026-01-01", "2026-01-02", "test", "staff:1")
    pos.send_recall_request(settings, request)
    reachability.metadata_ok(bootstrap, 1.0)
    topic_view.audit_inspect(bootstrap, codec, "op", "test", {}, producer_factory=rec("inspect"))
    consumer = rec("inspect.read")
    with pytest.raises(topic_view.InspectError):  # the mock has no such topic
        list(
            topic_view.read_records(
                bootstrap,
                "customer.cards",
                from_beginning=True,
                max_records=1,
                idle_timeout_s=0,
                consumer_factory=consumer,
            )
        )

    made = {kind for kind, _ in rec.made}
    assert made == {
        "admin.AdminClient",
        "admin.Consumer",
        "restore.Consumer",
        "output.Producer",
        "recall Producer",
        "broker.AdminClient",
        "pos.produce",
        "inspect",
        "inspect.read",
    }
    assert len(rec.made) == 11  # admin consumer: throwaway, catalogue, live
    for kind, config in rec.made:
        for key, value in EXPECTED.items():
            assert config.get(key) == value, (kind, key)
        assert config["ssl.ca.location"] == str(certs.ca), kind
        assert config["bootstrap.servers"] == bootstrap, kind

    # Faust: the app's credentials, and the aiokafka producer faust builds from them
    monkeypatch.setattr(output, "Producer", rec("worker Output"))
    app = worker_app.create_app(settings, load_rules())
    assert app.conf.broker_credentials is not None
    app.producer._new_producer()
    assert aio and aio[0]["security_protocol"] == "SASL_SSL"
    assert aio[0]["sasl_plain_password"] == PASSWORD
    assert isinstance(aio[0]["ssl_context"], ssl.SSLContext)
    assert rec.made[-1][1]["security.protocol"] == "SASL_SSL"


CONSTRUCTORS = {"Producer", "Consumer", "AdminClient"}
BUILDERS = {"client_config", "producer_config", "client_config_for", "output_config"}


def test_no_client_is_built_from_a_raw_dict() -> None:
    """Every confluent-kafka client in stream/ and benchmarks/ is built from a config made by
    stream/kafka_config.py (directly or through producer_config / clients.client_config_for), so a
    new client cannot forget the TLS/SASL settings."""
    offenders = []
    for path in sorted([*ROOT.glob("stream/**/*.py"), *ROOT.glob("benchmarks/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name not in CONSTRUCTORS:
                continue
            first = node.args[0] if node.args else None
            built = isinstance(first, ast.Call) and (
                getattr(first.func, "id", getattr(first.func, "attr", None)) in BUILDERS
            )
            if not built:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
    # and the builders themselves end in kafka_config.client_config
    from stream.local import clients
    from stream.simulator import pos

    kafka_config._security = KafkaSecurity(protocol="SSL")
    assert clients.client_config_for("b:1")["security.protocol"] == "SSL"
    assert kafka_config.producer_config("b:1")["security.protocol"] == "SSL"
    assert pos.producer_config is kafka_config.producer_config  # the name output.py imports
