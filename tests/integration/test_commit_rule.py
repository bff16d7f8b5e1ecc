"""The commit rule on the real broker: a failure no dead letter covers stops the worker.

Before: an exception inside a stage's agent crashed the agent, Faust kept the worker up, and
the batch the agent was in was acked and its offsets committed -- the records after the
failure were lost. Now the worker exits with EX_SOFTWARE (70) without committing past the
failed record, and a restarted worker processes it and everything after it.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from stream.engine.agents import EXIT_FAILED
from stream.local.broker import EmbeddedBroker
from stream.local.offsets import committed_offsets, read_all
from stream.local.registry_server import EmbeddedRegistryServer
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from tests.integration.worker_harness import WorkerProcess, produce_events
from tests.unit.topo_helpers import card, receipt


def test_a_failed_produce_stops_the_worker_and_nothing_after_it_is_committed(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path
) -> None:
    broker = broker_factory("commit-rule", topics=True)
    now = int(time.time() * 1000)
    c = card("CARD-C1", "CUST-C1", "HH-C1")
    ids = ["R-C-01", "R-C-02", "R-CRASH", "R-C-03", "R-C-04"]
    events = [{"topic": "customer.cards", "key": "CARD-C1", "value": c, "timestamp": now}] + [
        {
            "topic": "pos.receipts",
            "key": "CARD-C1",
            "value": receipt(rid, card_number="CARD-C1", purchased_at=now - 1_000),
            "timestamp": now,
        }
        for rid in ids
    ]
    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "schemas.json").start()
    app_id = f"it-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(broker.bootstrap, registry.url, tmp_path / "worker", app_id=app_id)
    try:
        codec = Codec(ConfluentRegistryClient(registry.url))
        produce_events(broker.bootstrap, codec, events)
        log = open(worker.log_path, "ab")  # noqa: SIM115 - closed below
        crashing = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.crashing_worker"],
            env=worker.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            code = crashing.wait(timeout=180)
        finally:
            if crashing.poll() is None:
                crashing.kill()
            log.close()
        assert code == EXIT_FAILED, worker.log_tail()
        assert "stopping the worker without committing" in worker.log_tail(200)
        # The receipts are on one partition, offsets 0..4; R-CRASH is offset 2.
        [(partition, offset)] = [
            (r.partition, r.offset)
            for r in read_all(broker.bootstrap, "pos.receipts")
            if b"R-CRASH" in (r.value or b"")
        ]
        committed = committed_offsets(broker.bootstrap, app_id, "pos.receipts")[partition]
        assert committed is None or committed <= offset, (committed, offset)

        # Restarted without the fault, it processes the failed receipt and the rest.
        worker.start()
        worker.wait_idle()
        totals = {
            codec.decode("receipts.totals", r.value)["receipt_id"]
            for r in read_all(broker.bootstrap, "receipts.totals")
            if r.value is not None
        }
        assert totals == set(ids)
        assert worker.stop() == 0, worker.log_tail()
    finally:
        if worker.proc is not None:
            worker.stop()
        registry.stop()
