"""A card closed while its receipt waits in a backlog: the receipt still accrues (real broker).

The finding: after a restart, a receipt (20,531 cents Bonus-eligible) whose card was closed
4.8 s after the purchase was processed after the closure and went anonymous; its household's
Bonus for the month fell from replay's 1,083 cents to 342. Here the worker is stopped, the
closure and the receipt reach the broker while it is down (the closure first, so the
restarted worker meets them in that order), and after the restart the household's Bonus
equals what ``replay`` computes from the same records -- with the receipt counted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from stream.local.broker import EmbeddedBroker
from stream.local.offsets import read_all
from stream.local.registry_server import EmbeddedRegistryServer
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.settings import load_rules
from stream.tools.replay import Driver, encode_event
from tests.integration.worker_harness import WorkerProcess, produce_events
from tests.unit.topo_helpers import GTIN_MILK, card, line, receipt
from topologies.queries.household_bonus import household_bonus_month


def test_a_receipt_whose_card_closed_during_the_backlog_keeps_its_household(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path
) -> None:
    broker = broker_factory("register-backlog", topics=True)
    now = int(time.time() * 1000)
    rules = load_rules()
    month = rules.local_month(now - 60_000)
    c = card("CARD-R1", "CUST-R1", "HH-R1", "MAIN_MEMBER")
    earlier = receipt("R-R-0", card_number="CARD-R1", purchased_at=now - 120_000,
                      lines=[line(1, GTIN_MILK, 10_000)])  # fmt: skip
    big = receipt("R-R-1", card_number="CARD-R1", purchased_at=now - 60_000,
                  lines=[line(1, GTIN_MILK, 20_531)])  # fmt: skip
    before = [
        {"topic": "customer.cards", "key": "CARD-R1", "timestamp": now - 300_000,
         "value": {**c, "effective_at": now - 300_000, "version": 1}},
        {"topic": "pos.receipts", "key": "CARD-R1", "value": earlier, "timestamp": now - 119_000},
    ]  # fmt: skip
    backlog = [
        # The closure (4.8 s after the purchase) reaches the broker before the receipt.
        {"topic": "customer.cards", "key": "CARD-R1", "value": None, "timestamp": now - 55_200},
        {"topic": "pos.receipts", "key": "CARD-R1", "value": big, "timestamp": now - 59_000},
    ]
    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "schemas.json").start()
    worker = WorkerProcess(
        broker.bootstrap, registry.url, tmp_path / "worker", app_id=f"it-{uuid.uuid4().hex[:8]}"
    )
    try:
        codec = Codec(ConfluentRegistryClient(registry.url))
        worker.start()
        produce_events(broker.bootstrap, codec, before)
        worker.wait_idle()
        assert worker.stop() == 0, worker.log_tail()
        produce_events(broker.bootstrap, codec, backlog)  # while the worker is down
        worker.start()
        worker.wait_idle()
        tallies = [
            codec.decode("household.bonus", r.value)
            for r in read_all(broker.bootstrap, "household.bonus")
            if r.value is not None
        ]
        assert worker.stop() == 0, worker.log_tail()
    finally:
        if worker.proc is not None:
            worker.stop()
        registry.stop()
    on_broker = [t for t in tallies if t["household_id"] == "HH-R1" and t["month"] == month][-1]

    driver = Driver(rules)
    for e in before + backlog:
        driver.feed(*encode_event(driver.codec, e))
    replayed = household_bonus_month(driver.states["household_bonus"], "HH-R1", month)
    assert on_broker["eligible_cents"] == replayed["eligible_cents"] == 30_531
    assert on_broker["bonus_cents"] == replayed["bonus_cents"]
    assert on_broker["receipt_count"] == replayed["receipt_count"] == 2
