"""The local broker's bounded profile on the real embedded broker: noida-db deletes old
records with these settings, registers stay whole, and the worker's changelogs are bounded.

Measured first (issue 16): on noida-db 0.2.3 ``retention.ms`` alone deletes nothing (the
segment never closes before the 7-day default ``segment.ms``); with a short ``segment.ms``
the log start moves once a closed segment is older than the retention; ``compact,delete``
works the same. This test pins that, with a 5 s retention instead of the default 10 min.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from stream.local.broker import EmbeddedBroker
from stream.local.offsets import watermarks
from stream.local.provision import create_local_topics
from stream.settings import Settings

RETENTION_S = 5


def test_local_topics_delete_old_records_and_keep_the_registers(
    broker_factory: Callable[..., EmbeddedBroker],
) -> None:
    broker = broker_factory("local-retention", topics=False)
    settings = Settings(local_retention_s=RETENTION_S, app_id="local-ret")
    create_local_topics(broker.bootstrap, settings)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    names = [
        "pos.receipts",
        "personal.line_items",
        "customer.cards",
        "local-ret-card_join-store-changelog",
    ]
    configs = {
        r.name: {k: v.value for k, v in f.result(30).items()}
        for r, f in admin.describe_configs([ConfigResource("topic", n) for n in names]).items()
    }
    assert configs["pos.receipts"]["retention.ms"] == "5000"
    assert configs["personal.line_items"]["cleanup.policy"] == "compact,delete"
    assert configs["local-ret-card_join-store-changelog"]["cleanup.policy"] == "compact,delete"
    assert configs["customer.cards"]["cleanup.policy"] == "compact"

    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    deadline = time.monotonic() + 90
    starts: dict[str, int] = {}
    # Keep writing (a segment rolls on a write after segment.ms) until the old ones are gone.
    while time.monotonic() < deadline:
        for i in range(50):
            for n in names:
                producer.produce(
                    n, key=b"k%d" % (i % 7) + str(time.monotonic()).encode(), value=b"v"
                )
        producer.flush(10)
        starts = {n: sum(low for low, _ in watermarks(broker.bootstrap, n).values()) for n in names}
        if all(starts[n] > 0 for n in names if n != "customer.cards"):
            break
        time.sleep(1)
    assert all(starts[n] > 0 for n in names if n != "customer.cards"), starts
    # The card register is read whole by every worker at start: never cut locally.
    assert starts["customer.cards"] == 0
