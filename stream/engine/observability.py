"""Worker-side metric collection that needs Faust: consumer lag, state sizes, parked receipts.

These figures are not events: they are read periodically (every ``COLLECT_INTERVAL_S``, a
Faust timer on every worker) into the gauges of :class:`stream.engine.metrics.Metrics`.

- Consumer lag per input topic partition this worker owns: end offset (one ListOffsets
  request for all of them, awaited, through Faust's consumer thread) minus the offset this
  worker last committed (the broker's log start when the group has committed nothing yet).
  The group's lag on every partition, held or not, and the stall verdict behind /healthz
  come from stream/engine/liveness.py, which also runs before the first assignment.
- Keys per stage table (RocksDB's ``estimate-num-keys``: no scan) and RocksDB bytes on disk
  (a directory walk in a thread).
- Parked receipts and the oldest one's age: a prefix scan of the ``park|`` keys of the
  card_join partitions this worker owns (parked receipts are few; one partition at a time,
  yielding to the event loop in between).
- Event-time lag per ``pos.receipts`` partition, from the watermarks the runner keeps.

Also the process's own figures (:func:`add_process_metrics`), and Faust's engine metrics
(``faust_*``) with the ``/metrics`` page (:func:`faust_sensors`).

Nothing here reads or exposes a customer, card or household id: only counts, offsets, ages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, ProcessCollector

from stream.engine.metrics import Metrics
from stream.engine.patches import committed_offsets
from stream.engine.state import TableState
from stream.engine.store_patches import open_partition_dbs
from topologies import card_join
from topologies.pipeline import STAGES

log = logging.getLogger(__name__)

COLLECT_INTERVAL_S = 5.0
# Stage input topics (each appears once even when two stages read it).
INPUT_TOPICS = tuple(dict.fromkeys(t for s in STAGES for t in s.inputs))


def _disk_bytes(paths: Iterable[Path]) -> int:
    total = 0
    for path in paths:
        for root, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(root, name)).st_size
    return total


class WorkerCollector:
    """Fills the periodic gauges of ``metrics`` from a running Faust app."""

    def __init__(self, app: Any, metrics: Metrics, tables: dict[str, Any], partitions: int) -> None:
        self.app = app
        self.metrics = metrics
        self.tables = tables
        self.partitions = partitions
        self._lag_children: set[tuple[str, str]] = set()

    async def collect(self) -> None:
        if getattr(self.app, "rebalancing", False):
            # Assignments are in flux: keep the previous figures, ask the broker nothing.
            return
        started = time.perf_counter()
        try:
            owned = self._owned()
            await self._consumer_lag(owned)
            self._assigned(owned)
            self.metrics.refresh_event_time_lag({p for t, p in owned if t == "pos.receipts"})
            await self._parked({p for t, p in owned if t in card_join.INPUTS})
            await self._tables(owned)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - metrics must never stop the worker
            self.metrics.collect_errors.inc()
            log.warning("metrics collection failed: %s: %s", type(exc).__name__, exc)
        finally:
            self.metrics.collect_duration.set(time.perf_counter() - started)

    def _owned(self) -> set[tuple[str, int]]:
        consumer = self.app.consumer
        return {
            (tp.topic, tp.partition) for tp in consumer.assignment() if tp.topic in INPUT_TOPICS
        }

    def _assigned(self, owned: set[tuple[str, int]]) -> None:
        for topic in INPUT_TOPICS:
            self.metrics.assigned_partitions.labels(topic).set(
                sum(1 for t, _p in owned if t == topic)
            )

    async def _consumer_lag(self, owned: set[tuple[str, int]]) -> None:
        consumer = self.app.consumer
        tps = [tp for tp in consumer.assignment() if (tp.topic, tp.partition) in owned]
        ends: dict[Any, int] = {}
        starts: dict[Any, int] = {}
        if tps:
            ends = dict(await asyncio.wait_for(consumer.highwaters(*tps), COLLECT_INTERVAL_S))
            committed = committed_offsets(consumer)
            never = [tp for tp in tps if committed.get(tp) is None]
            if never:
                starts = dict(
                    await asyncio.wait_for(consumer.earliest_offsets(*never), COLLECT_INTERVAL_S)
                )
        seen: set[tuple[str, str]] = set()
        committed = committed_offsets(consumer)
        for tp in tps:
            end = ends.get(tp)
            if end is None:
                continue
            done = committed.get(tp)
            if done is None:
                done = starts.get(tp, 0)
            labels = (tp.topic, str(tp.partition))
            self.metrics.consumer_lag.labels(*labels).set(max(0, end - done))
            seen.add(labels)
        # Partitions revoked since the last collection: their lag is another worker's now.
        for labels in self._lag_children - seen:
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(*labels)
        self._lag_children = seen

    async def _parked(self, owned: set[int]) -> None:
        table = self.tables.get(card_join.STAGE)
        if table is None:
            return
        count = 0
        oldest: int | None = None
        for partition in sorted(owned):
            n, first = card_join.parked_summary(TableState(table, partition))
            count += n
            if first is not None:
                oldest = first if oldest is None else min(oldest, first)
            await asyncio.sleep(0)
        self.metrics.parked.set(count)
        age = 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)
        self.metrics.parked_max_age.set(age)

    async def _tables(self, owned: set[tuple[str, int]]) -> None:
        paths: dict[str, list[Path]] = {}
        for stage in STAGES:
            table = self.tables.get(stage.name)
            if table is None:
                continue
            name = f"{stage.name}-store"
            store = table.data
            dbs = open_partition_dbs(table)
            mine = {p for t, p in owned if t in stage.inputs}
            keys = 0
            for partition, db in dbs.items():
                if stage.is_global or partition in mine:
                    with contextlib.suppress(Exception):
                        keys += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
            self.metrics.table_keys.labels(name).set(keys)
            paths[name] = [store.partition_path(p) for p in range(self.partitions)]
        sizes = await asyncio.to_thread(
            lambda: {name: _disk_bytes(p for p in ps if p.exists()) for name, ps in paths.items()}
        )
        for name, size in sizes.items():
            self.metrics.table_disk_bytes.labels(name).set(size)


def add_process_metrics(registry: CollectorRegistry) -> None:
    """The worker process's own figures: ``process_*`` (CPU seconds, resident memory, open
    files, start time) and ``purchase_stream_build_info{version}``."""
    from importlib.metadata import PackageNotFoundError, version

    ProcessCollector(registry=registry)
    try:
        running = version("purchase-stream")
    except PackageNotFoundError:
        running = "unknown"
    Gauge(
        "purchase_stream_build_info",
        "Always 1; the running version as a label",
        ["version"],
        registry=registry,
    ).labels(running).set(1)


def faust_sensors(app: Any, registry: CollectorRegistry) -> None:
    """Faust's engine metrics (``faust_*``) on ``registry``, without its per-message hooks,
    and the ``/metrics`` page serving the whole registry.

    What ``faust.sensors.prometheus.setup_prometheus_sensors`` does, with a leaner monitor:
    Faust calls the monitor for every record in and out of a stream, every table access and
    every send; the base Monitor keeps per-message statistics and the Prometheus one adds
    several labelled metric updates each time: 5-8 % of the worker's main thread in a py-spy
    profile (benchmarks/results/2026-12-07-diary.md, section 3), for ``faust_*`` figures our own
    metrics already give (``purchase_stream_events_in_total``, ``records_out_total``, stage
    latency). What the dashboards use from Faust -- commit latency, rebalances, assignment -- comes
    from the hooks kept. tests/unit/test_patches.py checks each hook overridden here is one Faust's
    Monitor has (a renamed hook would silently come back).
    """
    from aiohttp.web import Response
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    class LeanPrometheusMonitor(PrometheusMonitor):
        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            return None

        def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
            return None

        def on_stream_event_out(
            self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
        ) -> None:
            return None

        def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
            return None

        def on_table_get(self, table: Any, key: Any) -> None:
            return None

        def on_table_set(self, table: Any, key: Any, value: Any) -> None:
            return None

        def on_table_del(self, table: Any, key: Any) -> None:
            return None

        def on_send_initiated(
            self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
        ) -> None:
            return None

        def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
            return None

    app.monitor = LeanPrometheusMonitor(metrics=FaustMetrics.create(registry, "faust"))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # Faust's own page sets the header itself: aiohttp refuses a content_type argument
        # with a charset in it.
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        return Response(body=generate_latest(registry), headers=headers, status=200)
