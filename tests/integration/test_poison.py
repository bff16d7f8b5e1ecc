"""Poison and oversized records on the real broker: dead-lettered, and nothing after them lost.

The finding this reproduces: a valid receipt with 10,000 line items (241 KB of Avro) became
1.15 MB of JSON on ``receipts.identified``; producing it failed inside the stage's agent,
the agent crashed inside a worker that stayed up, and the next 20 records of that partition
were never processed while their offsets were committed -- no dead letter, lag 0, no error
metric. Here the same receipt, and one whose identified record would exceed the limit the
broker sets on ``receipts.identified`` (lowered on this test's own broker, read by the
worker at start), are followed by 20 ordinary receipts on the same partition: both become
dead letters with their original bytes, all 20 are processed, the worker stays up, and its
metrics count exactly what it wrote.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from stream.engine.runner import DLQ_TOPIC
from stream.local.broker import EmbeddedBroker
from stream.local.offsets import read_all
from stream.local.registry_server import EmbeddedRegistryServer
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from tests.integration.worker_harness import WorkerProcess, produce_events
from tests.unit.topo_helpers import GTIN_MILK, card, line, receipt

IDENTIFIED_LIMIT = 60_000


def _lower_identified_limit(bootstrap: str) -> None:
    entry = ConfigEntry(
        "max.message.bytes", str(IDENTIFIED_LIMIT), incremental_operation=AlterConfigOpType.SET
    )
    res = ConfigResource("topic", "receipts.identified", incremental_configs=[entry])
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the answer
    for future in admin.incremental_alter_configs([res]).values():
        future.result(10)


def _metric(port: int, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310
        for text in resp.read().decode().splitlines():
            if text.startswith(f"{name}{{{labels}}}"):
                return float(text.split()[-1])
    return 0.0


def test_oversized_receipts_are_dead_lettered_and_the_partition_goes_on(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path
) -> None:
    broker = broker_factory("poison", topics=True)
    _lower_identified_limit(broker.bootstrap)
    now = int(time.time() * 1000)
    c = card("CARD-P1", "CUST-P1", "HH-P1")

    def ev(r: dict) -> dict:
        return {"topic": "pos.receipts", "key": c["card_number"], "value": r, "timestamp": now}

    huge = receipt(
        "R-10K",
        card_number="CARD-P1",
        purchased_at=now - 60_000,
        lines=[line(i, GTIN_MILK, 1) for i in range(1, 10_001)],
    )
    # 500 lines (within the line limit) with 40-character product codes: ~30 KB of Avro,
    # ~80 KB as JSON on receipts.identified, over the 60 KB this broker allows there.
    wide = receipt(
        "R-WIDE",
        card_number="CARD-P1",
        purchased_at=now - 60_000,
        lines=[line(i, "4" * 40, 1) for i in range(1, 501)],
    )
    after = [
        receipt(f"R-AFTER-{i:02d}", card_number="CARD-P1", purchased_at=now - 60_000 + i)
        for i in range(20)
    ]
    events = [
        {"topic": "customer.cards", "key": c["card_number"], "value": c, "timestamp": now},
        ev(receipt("R-BEFORE", card_number="CARD-P1", purchased_at=now - 60_000)),
        ev(huge),
        ev(wide),
        *[ev(r) for r in after],
    ]

    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "schemas.json").start()
    worker = WorkerProcess(
        broker.bootstrap, registry.url, tmp_path / "worker", app_id=f"it-{uuid.uuid4().hex[:8]}"
    ).start()
    try:
        codec = Codec(ConfluentRegistryClient(registry.url))
        produce_events(broker.bootstrap, codec, events)
        worker.wait_idle()
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()

        dead = [codec.decode(DLQ_TOPIC, r.value) for r in read_all(broker.bootstrap, DLQ_TOPIC)]
        assert sorted(d["reason"] for d in dead) == ["output_too_large", "too_many_lines"]
        by_reason = {d["reason"]: d for d in dead}
        assert codec.decode("pos.receipts", by_reason["too_many_lines"]["value"]) == huge
        assert codec.decode("pos.receipts", by_reason["output_too_large"]["value"]) == wide
        assert all(d["key"] == b"CARD-P1" for d in dead)

        totals = {
            codec.decode("receipts.totals", r.value)["receipt_id"]
            for r in read_all(broker.bootstrap, "receipts.totals")
            if r.value is not None
        }
        assert totals == {"R-BEFORE", *(r["receipt_id"] for r in after)}

        # The metrics agree with what was written (finding: 3 counted, 23 written).
        port = worker.web_port
        assert _metric(port, "purchase_stream_records_out_total", 'topic="deadletters"') == 2
        for reason in ("too_many_lines", "output_too_large"):
            labels = f'reason="{reason}",stage="card_join"'
            assert _metric(port, "purchase_stream_dead_letters_total", labels) == 1, reason
        assert worker.stop() == 0, worker.log_tail()
    finally:
        worker.stop()
        registry.stop()
