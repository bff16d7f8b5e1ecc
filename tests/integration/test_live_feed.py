"""The live feed (stream/serve/live.py) on the real broker: it reads only while somebody listens.

A worker with no live connection must not fetch every counter change of the country; the
first subscription positions it at the end, and every change made after ``subscribe()``
returns reaches the subscriber (its own changes, nobody else's).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from confluent_kafka import Producer

from stream.kafka_config import producer_config
from stream.serde.codec import Codec
from stream.serde.registry_store import InMemoryRegistry
from stream.serve.live import COUNTERS_TOPIC, LiveFeed
from topologies import counters as counters_topology
from topologies.access import CUSTOMER, Viewer

pytestmark = pytest.mark.integration


def counters(customer: str, receipts: int) -> dict[str, Any]:
    """A ``smobiili.counters`` record as the counters stage writes it."""
    return counters_topology.record(
        customer, "2026-11", {"receipt_count": receipts, "updated_at": 1}
    )


async def _until(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_reads_only_while_subscribed_and_from_the_subscription_on(bootstrap: str) -> None:
    codec = Codec(InMemoryRegistry())
    producer = Producer(producer_config(bootstrap, **{"client.id": "live-feed-test"}))
    me, other = f"live-me-{time.time_ns()}", f"live-other-{time.time_ns()}"

    def send(customer: str, receipts: int) -> None:
        value = codec.encode(COUNTERS_TOPIC, counters(customer, receipts))
        producer.produce(COUNTERS_TOPIC, key=customer.encode(), value=value)
        assert producer.flush(10) == 0

    async def scenario() -> None:
        feed = LiveFeed(bootstrap, codec, 4)
        feed.start(asyncio.get_running_loop())
        try:
            await _until(feed.ready.is_set)
            send(me, 1)  # nobody listens: not read, and never delivered later
            for _ in range(15):  # the consumer itself holds no partition while idle
                assert feed.assigned_partitions() == 0
                await asyncio.sleep(0.1)
            assert not feed.reading

            viewer = Viewer(CUSTOMER, me)
            queue = await feed.subscribe(viewer)
            assert feed.reading
            send(other, 7)  # at once: positioned before subscribe() returned
            send(me, 2)
            kind, payload = await asyncio.wait_for(queue.get(), timeout=20)
            assert (kind, payload["customer_id"], payload["receipt_count"]) == ("counters", me, 2)
            await asyncio.sleep(0.5)
            assert queue.empty()  # neither the change before subscribing nor other's

            feed.unsubscribe(viewer, queue)
            await _until(lambda: not feed.reading)
            assert feed.assigned_partitions() == 0
            send(me, 3)  # while idle again
            queue = await feed.subscribe(viewer)
            send(me, 4)
            kind, payload = await asyncio.wait_for(queue.get(), timeout=20)
            assert payload["receipt_count"] == 4
        finally:
            feed.stop()

    asyncio.run(scenario())
