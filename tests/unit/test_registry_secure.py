"""The production registry client (confluent-kafka's SchemaRegistryClient) over basic auth and
TLS, against the embedded server requiring both, and its errors mapped onto the codec's."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stream.local.registry_server import EmbeddedRegistryServer
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.serde.registry_store import (
    IncompatibleSchemaError,
    InvalidSchemaError,
    RegistryAccessError,
    RegistryError,
    RegistryUnavailableError,
    SchemaNotFoundError,
)
from stream.serde.schema_registry import registry_from_settings
from stream.settings import load_settings
from tests.tls_certs import Certs, make_certs

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "svc-stream", "registry-pa55-never-printed"
CARD = {
    "card_number": "6001234567890",
    "customer_id": "C1",
    "household_id": "H1",
    "role": "main",
    "effective_at": None,
    "version": None,
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def secure_server(certs: Certs, tmp_path: Path):
    server = EmbeddedRegistryServer(
        "127.0.0.1",
        0,
        tmp_path / "schemas.json",
        basic_auth=(USER, PASSWORD),
        certfile=certs.cert,
        keyfile=certs.key,
    )
    with server:
        yield server


def client(url: str, certs: Certs, password: str = PASSWORD, ca: Path | None = None):
    return ConfluentRegistryClient(
        url, timeout=5, username=USER, password=password, ca_file=str(ca or certs.ca)
    )


def test_the_codec_works_over_basic_auth_and_tls(secure_server, certs: Certs) -> None:
    assert secure_server.url.startswith("https://")
    producer = Codec(client(secure_server.url, certs))
    worker = Codec(client(secure_server.url, certs))  # another process, no shared cache
    data = producer.encode("customer.cards", CARD)
    assert worker.decode("customer.cards", data) == CARD
    assert worker.warm() > 0  # every topic's schema registered through the secure path


def test_the_settings_build_the_same_client(secure_server, certs: Certs) -> None:
    # the credentials in the URL's user info, the CA as a setting: as an operator would
    host_port = secure_server.url.removeprefix("https://")
    settings = load_settings(
        env={
            "PURCHASE_STREAM_SCHEMA_REGISTRY_URL": f"https://{USER}:{PASSWORD}@{host_port}",
            "PURCHASE_STREAM_SCHEMA_REGISTRY_CA_FILE": str(certs.ca),
        }
    )
    registry = registry_from_settings(settings)
    assert isinstance(registry, ConfluentRegistryClient)
    assert PASSWORD not in repr(registry)
    assert Codec(registry).schema_id("customer.cards") >= 1


def test_wrong_credentials_are_an_access_error_naming_no_secret(secure_server, certs) -> None:
    wrong = "not-the-password"
    with pytest.raises(RegistryAccessError) as err:
        Codec(client(secure_server.url, certs, password=wrong)).warm()
    assert "refused the credentials" in str(err.value)
    assert wrong not in str(err.value) and PASSWORD not in str(err.value)
    no_auth = ConfluentRegistryClient(secure_server.url, timeout=5, ca_file=str(certs.ca))
    with pytest.raises(RegistryAccessError):
        no_auth.get_schema(1)


def test_an_untrusted_certificate_is_an_access_error(secure_server, certs: Certs) -> None:
    with pytest.raises(RegistryAccessError, match="not trusted"):
        client(secure_server.url, certs, ca=certs.other_ca).register(
            "customer.cards-value", json.dumps({"type": "string"})
        )


def test_an_outage_is_unavailable_not_access(certs: Certs, tmp_path: Path) -> None:
    server = EmbeddedRegistryServer(
        "127.0.0.1", 0, basic_auth=(USER, PASSWORD), certfile=certs.cert, keyfile=certs.key
    ).start()
    url = server.url
    server.stop()
    with pytest.raises(RegistryUnavailableError):
        client(url, certs).get_schema(1)


class _Canned(BaseHTTPRequestHandler):
    """Answers every request with the status and Confluent error code in its path."""

    protocol_version = "HTTP/1.1"
    hits = 0

    def log_message(self, *_: Any) -> None:
        pass

    def _answer(self) -> None:
        type(self).hits += 1
        status, code = (int(x) for x in self.path.strip("/").split("/")[1:3])
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps({"error_code": code, "message": f"canned {status}"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


@pytest.fixture
def canned():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (404, 40403, SchemaNotFoundError),
        (401, 40101, RegistryAccessError),
        (403, 40301, RegistryAccessError),
        (422, 42201, InvalidSchemaError),
        (409, 409, IncompatibleSchemaError),
        (503, 50003, RegistryUnavailableError),
        (500, 50001, RegistryUnavailableError),
        (400, 400, RegistryError),
    ],
)
def test_confluent_errors_map_onto_ours(canned: str, status: int, code: int, error) -> None:
    # the canned server puts the answer in the path: /x/<status>/<code>
    registry = ConfluentRegistryClient(f"{canned}/x/{status}/{code}", timeout=5)
    _Canned.hits = 0
    with pytest.raises(error) as err:
        registry.get_schema(1)
    assert type(err.value) is error or error is RegistryError
    if status >= 500:  # transient: confluent's client retried before giving up
        assert _Canned.hits == 1 + ConfluentRegistryClient.MAX_RETRIES
    # the codec's view of a 5xx: a registry outage, not undecodable bytes
    if status == 503:
        with pytest.raises(RegistryUnavailableError):
            Codec(registry).decode("customer.cards", b"\x00\x00\x00\x00\x07\x00")


def test_the_cli_stops_at_start_on_wrong_credentials(secure_server, certs: Certs) -> None:
    """`purchase-stream pos` registers its schemas first: wrong credentials end it with exit 2
    and one line saying what to fix, before any record is sent."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "PURCHASE_STREAM_SCHEMA_REGISTRY_URL": secure_server.url,
        "PURCHASE_STREAM_SCHEMA_REGISTRY_USERNAME": USER,
        "PURCHASE_STREAM_SCHEMA_REGISTRY_PASSWORD": "wrong-password",
        "PURCHASE_STREAM_SCHEMA_REGISTRY_CA_FILE": str(certs.ca),
        "PURCHASE_STREAM_BROKER": "127.0.0.1:1",  # never reached
    }
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "pos", "--receipts", "3", "--households", "2"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "refused the credentials" in last
    assert "wrong-password" not in done.stderr and PASSWORD not in done.stderr
