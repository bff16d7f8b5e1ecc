"""The product catalogue in every worker: a compacted topic read whole, outside the group.

Receipts are partitioned by card and customer, never by GTIN, so every worker needs every
product. Faust's GlobalTable was the first design; with it a worker that joined a group
whose catalogue changelog already held records restored them and then never resumed its
stream partitions (seen with two workers sharing partitions, and as the restart stall after
an empty-state restore). Reading ``product.catalog`` directly is the Kafka Streams
GlobalKTable in plain terms, and keeps Faust's recovery to partitioned tables only:

1. before the worker starts, :meth:`CatalogFeed.catch_up` reads every partition from the
   beginning to the end offsets it saw when it started (the catalogue is small: ~100k
   products), so no receipt is routed against a half-loaded catalogue;
2. then a background thread keeps reading; each record is applied on the event loop (the
   same thread that routes receipts), through the same :class:`stream.engine.runner.Runner` step
   ``replay`` runs, and the cache entry of its GTIN is dropped.

A catalogue record that fails validation is dead-lettered by every worker that reads it
live (same key and bytes, so easy to recognise); during the catch-up it is only counted:
it was dead-lettered when it first arrived.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from stream.engine.runner import Outgoing, RawRecord, Runner
from stream.engine.state import CachedCatalog
from stream.local.clients import RestingReader, assigned_consumer
from topologies import catalog as catalog_topology
from topologies.pipeline import STAGE_BY_NAME
from topologies.state import MemoryState

log = logging.getLogger(__name__)

TOPIC = "product.catalog"


class CatalogFeed:
    def __init__(self, bootstrap: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.state = MemoryState()
        self.catalog = CachedCatalog(self.state, catalog_topology.key)
        self.stage = STAGE_BY_NAME[catalog_topology.STAGE]
        self.runner: Runner | None = None
        self.sink: Callable[[Outgoing], None] | None = None
        self.applied = 0
        self._consumer: Consumer | None = None
        self._caught_up_to: dict[int, int] = {}  # partition -> high watermark at catch_up
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _new_consumer(self) -> Consumer:
        return assigned_consumer(
            self.bootstrap, "catalog", [TOPIC], self.partitions, OFFSET_BEGINNING, 100
        )

    def _apply(self, msg: Message, live: bool) -> None:
        if self.runner is None:
            raise RuntimeError("catalogue feed used before start()")
        _ts_type, ts = msg.timestamp()
        rec = RawRecord(TOPIC, msg.partition() or 0, msg.offset() or 0, ts, msg.key(), msg.value())
        outs = self.runner.process(self.stage, self.state, rec)
        key = msg.key()
        if key is not None:
            self.catalog.invalidate(key.decode("utf-8", "replace"))
        self.applied += 1
        if live and self.sink is not None:
            for out in outs:
                self.sink(out)

    def catch_up(self, runner: Runner, timeout_s: float = 600) -> int:
        """Read the catalogue to the end offsets of now (blocking); returns records applied."""
        self.runner = runner
        consumer = self._consumer = self._new_consumer()
        started = time.monotonic()
        ends: dict[int, int] = {}
        for p in range(self.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=30)
            self._caught_up_to[p] = high
            if high > low:
                ends[p] = high
        pending = dict(ends)
        last_report = started
        while pending:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"catalogue not loaded in {timeout_s:.0f}s: {pending}")
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                self._apply(msg, live=False)
                p = msg.partition() or 0
                if p in pending and (msg.offset() or 0) + 1 >= pending[p]:
                    del pending[p]
            if time.monotonic() - last_report > 5:
                log.info("catalogue: %d records applied, still loading", self.applied)
                last_report = time.monotonic()
        log.info("catalogue loaded: %d records in %.1fs", self.applied, time.monotonic() - started)
        return self.applied

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Keep applying new catalogue records on ``loop``'s thread."""
        if self._consumer is None:
            consumer = self._consumer = self._new_consumer()
            reader = RestingReader.at(consumer, [TOPIC], self.partitions, end=False)
        else:
            # Continue where catch_up stopped: the consumer's position where it read
            # something, else the high watermark catch_up saw (nothing before it existed).
            consumer = self._consumer
            positions = {}
            for tp in consumer.position([TopicPartition(TOPIC, p) for p in range(self.partitions)]):
                start = tp.offset if tp.offset >= 0 else self._caught_up_to.get(tp.partition, 0)
                positions[(TOPIC, tp.partition)] = start
            reader = RestingReader(consumer, positions)

        def run() -> None:
            try:
                while not self._stop.is_set():
                    for msg in reader.poll(self._stop):
                        if msg.error() is None:
                            loop.call_soon_threadsafe(self._apply, msg, True)
            except Exception:  # noqa: BLE001 - logged; the worker keeps the catalogue it has
                log.exception("catalogue feed stopped")
            finally:
                consumer.close()

        self._thread = threading.Thread(target=run, name="catalog-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
