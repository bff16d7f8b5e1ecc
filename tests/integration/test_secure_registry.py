"""The worker against a schema registry that requires basic auth over TLS (a certificate made
by the test): with the right settings it processes receipts through confluent-kafka's
registry client; with a wrong password it stops at start, exit 2, one clear line, and no
secret in its log."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from stream.local.registry_server import EmbeddedRegistryServer
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.simulator.config import SimConfig
from stream.simulator.generator import generate
from tests.integration.worker_harness import WorkerProcess, produce_events
from tests.tls_certs import make_certs

pytestmark = pytest.mark.integration

USER, PASSWORD = "stream-worker", "worker-registry-pa55-never-logged"


@pytest.fixture
def secure_registry(tmp_path: Path):
    certs = make_certs(tmp_path / "certs")
    server = EmbeddedRegistryServer(
        "127.0.0.1",
        0,
        tmp_path / "schemas.json",
        basic_auth=(USER, PASSWORD),
        certfile=certs.cert,
        keyfile=certs.key,
    ).start()
    try:
        yield server, certs
    finally:
        server.stop()


def _worker(bootstrap: str, server, certs, tmp_path: Path, name: str, password: str):
    return WorkerProcess(
        bootstrap,
        server.url,
        tmp_path / name,
        app_id=f"it-secure-{uuid.uuid4().hex[:8]}",
        extra_env={
            "PURCHASE_STREAM_SCHEMA_REGISTRY_USERNAME": USER,
            "PURCHASE_STREAM_SCHEMA_REGISTRY_PASSWORD": password,
            "PURCHASE_STREAM_SCHEMA_REGISTRY_CA_FILE": str(certs.ca),
        },
    )


def test_wrong_registry_credentials_stop_the_worker_at_start(
    bootstrap: str, secure_registry, tmp_path: Path
) -> None:
    server, certs = secure_registry
    wrong = "not-the-worker-password"
    worker = _worker(bootstrap, server, certs, tmp_path, "wrong", wrong).start()
    assert worker.proc is not None
    try:
        code = worker.proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        worker.stop()
        raise AssertionError(f"worker kept running:\n{worker.log_tail()}") from None
    log = worker.log_path.read_text(errors="replace")
    assert code == 2, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith("error: ") and "refused the credentials" in last
    assert "schema_registry_password" in last  # says what to fix
    assert wrong not in log and PASSWORD not in log


def test_the_worker_processes_through_an_authenticated_tls_registry(
    bootstrap: str, secure_registry, tmp_path: Path
) -> None:
    server, certs = secure_registry
    worker = _worker(bootstrap, server, certs, tmp_path, "right", PASSWORD).start()
    try:
        codec = Codec(
            ConfluentRegistryClient(
                server.url, username=USER, password=PASSWORD, ca_file=str(certs.ca)
            )
        )
        now = int(time.time() * 1000)
        cfg = SimConfig(seed=17, households=5, receipts=20, start_ms=now - 60_000)
        produce_events(bootstrap, codec, generate(cfg))
        assert worker.wait_processing(timeout=180) > 0
    finally:
        code = worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert PASSWORD not in log
    # the worker registered its schemas through the authenticated client
    assert "customer.cards-value" in server.registry.subjects()
