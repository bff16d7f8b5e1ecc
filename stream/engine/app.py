"""The Faust app of a worker: one agent and one RocksDB-backed table per partitioned stage
of topologies.pipeline (the catalogue is read whole, below), and everything around them, wired
in :func:`create_app`.

Facts that shape this (faust-streaming 0.15.x, see docs/architecture.md):
- ``kafka://`` (aiokafka) transport; ``confluent://`` skips Faust's partition assignor.
- ``web_tables_enabled=False``: the built-in ``/table/`` pages would serve personal data.
- ``rocksdb://`` tables open one database per partition: the block cache is set explicitly
  (Faust's default is 2 GiB each).
- every worker reads the whole catalogue itself (stream/engine/catalog_feed.py: a Faust
  GlobalTable stalled workers that restored it); the tables are partitioned like their
  input topics, which are co-partitioned by key.
- the library behaviours the worker changes are in stream/engine/patches.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from stream.engine import store_patches
from stream.engine.agents import EXIT_STUCK, RegistryWaits, bind_agent, fatal_exit
from stream.engine.catalog_feed import CatalogFeed
from stream.engine.liveness import LivenessMonitor
from stream.engine.membership import group_instance_id
from stream.engine.metrics import Metrics
from stream.engine.observability import (
    COLLECT_INTERVAL_S,
    WorkerCollector,
    add_process_metrics,
    faust_sensors,
)
from stream.engine.offsets import OffsetTracker
from stream.engine.output import Output, attach
from stream.engine.patches import (
    idle_fetch_wait,
    one_ack_per_offset,
    retry_failed_commits,
    static_member_leaves_on_stop,
    strict_producer_flush,
)
from stream.engine.runner import Outgoing, Runner
from stream.engine.store_patches import table_stores_without_wal
from stream.kafka_config import configure as configure_kafka
from stream.local.topic_admin import COMPACT_TUNING
from stream.serde.codec import Codec
from stream.serde.schema_registry import registry_from_settings
from stream.serve.api import Api
from stream.serve.edge import MAX_BODY_BYTES, edge
from stream.serve.live import LiveFeed
from stream.settings import Settings
from topologies import household_bonus, personal_routing
from topologies.pipeline import GROUP_INPUTS, STAGES, Stage
from topologies.rules import Rules

log = logging.getLogger(__name__)


def table_name(stage: Stage) -> str:
    return f"{stage.name}-store"


def create_app(
    settings: Settings,
    rules: Rules,
    registry: CollectorRegistry | None = None,
    codec: Codec | None = None,
) -> faust.App:
    """The worker's app, every agent, table, timer, page and background task bound to it.

    What ``run_worker`` needs later is on ``app.purchase_stream`` (a dict).
    """
    patch_libraries()
    app = faust_app(settings)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = Metrics(registry)
    add_process_metrics(registry)
    codec = codec or Codec(registry_from_settings(settings))
    tables = stage_tables(app, settings)
    feed = CatalogFeed(settings.broker, settings.partitions)
    runner = Runner(codec, rules, metrics, catalog=feed.catalog, wall_clock=time.time)
    # Stage outputs and table changelogs go through one confluent-kafka producer
    # (stream/engine/output.py), flushed by Faust before every commit.
    output = Output(
        settings.broker,
        f"{settings.app_id}-output",
        settings.producer_max_batch_size,
        on_failure=lambda message: fatal_exit(f"output delivery failed: {message}"),
    )
    attach(app, output)
    # A stop keeps the changelog offsets delivered since the last commit (store_patches).
    store_patches.BEFORE_STOP[:] = [output.settle]
    changelogs = {name: output.changelog(table) for name, table in tables.items()}
    offsets = OffsetTracker()
    waits = RegistryWaits()
    for stage in STAGES:
        if not stage.is_global:
            bind_agent(
                app,
                stage,
                tables[stage.name],
                runner,
                output,
                changelogs[stage.name],
                settings.broker,
                offsets,
                waits,
                pack=settings.pack_internal_topics,
            )
    _bind_catalog_feed(app, feed, runner, output)
    faust_sensors(app, registry)
    # Consumer lag, state sizes and parked receipts: read periodically, on every worker.
    collector = WorkerCollector(app, metrics, tables, settings.partitions)
    app.timer(interval=COLLECT_INTERVAL_S, name="purchase_stream.metrics")(collector.collect)
    liveness = _bind_liveness(app, settings, metrics, waits)
    _bind_serving(app, settings, rules, metrics, codec, tables)
    from stream.engine.timers import bind_ticks

    bind_ticks(app, settings.tick_interval_s, tables, changelogs, runner, output)
    _bind_offset_tracking(app, settings, offsets)
    app.purchase_stream = {  # type: ignore[attr-defined]
        "metrics": metrics,
        "codec": codec,
        "tables": tables,
        "catalog_feed": feed,
        "runner": runner,
        "output": output,
        "liveness": liveness,
    }
    return app


def patch_libraries() -> None:
    """Every library patch the worker needs (stream/engine/patches.py, store_patches.py),
    before the app."""
    strict_producer_flush()
    idle_fetch_wait()
    static_member_leaves_on_stop()
    one_ack_per_offset()
    retry_failed_commits()
    # A revoked partition whose database cannot be flushed stops the worker (commit rule).
    table_stores_without_wal(on_revoke_failure=fatal_exit)


def faust_app(settings: Settings) -> faust.App:
    """The Faust app with the worker's engine settings (no agents, tables or pages yet)."""
    # TLS/SASL for this process's Kafka clients: Faust's below, confluent-kafka's everywhere.
    kafka_security = configure_kafka(settings)
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.broker}",
        broker_credentials=kafka_security.faust_credentials(),
        store="rocksdb://",
        datadir=settings.state_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,  # Faust declares its own changelog topics
        topic_disable_leader=True,  # no leader election needed: no timers with on_leader
        processing_guarantee="at_least_once",
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        # No standby replicas. Faust's standby reads lose records: a standby partition's
        # catch-up (its database's offset to the high watermark when standbys start) was
        # dropped while the database's offset key moved past it, so the next owner computed
        # from stale state and the S-mobiili counters lost receipts (the chaos suite,
        # docs/reliability.md "Standby replicas"; faust-streaming issue #212 reports the
        # same for global tables). Without standbys a partition's database is written only
        # by its owner, by the bulk restore at start (stream/engine/restore.py) and by
        # Faust's active recovery, which seeks before it fetches; a partition that moves
        # here reads what it lacks from the changelog when it is assigned.
        table_standby_replicas=0,
        broker_session_timeout=settings.broker_session_timeout_s,
        # Static membership: a worker restarted after kill -9 replaces its dead member
        # (noida-db never evicts it); a clean stop still leaves (stream/engine/membership.py).
        consumer_group_instance_id=group_instance_id(settings),
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        producer_max_batch_size=settings.producer_max_batch_size,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        # The URL other workers use to forward table-routed requests here (Faust derives
        # it from web_host otherwise, which is useless when binding 0.0.0.0).
        canonical_url=settings.canonical_url or f"http://{settings.web_host}:{settings.web_port}",
        web_tables_enabled=False,
        # The API's edge: limits, one audit record per request (stream/serve/api.py).
        web_application_options={"middlewares": [edge], "client_max_size": MAX_BODY_BYTES},
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_router_enabled=False,
    )


def stage_tables(app: faust.App, settings: Settings) -> dict[str, Any]:
    """One RocksDB-backed table per partitioned stage, by stage name."""
    # One RocksDB per table partition: bound its block cache and write buffers (Faust's
    # defaults are 2 GiB of cache and up to 3 x 64 MiB of memtables per database).
    options = {
        "block_cache_size": settings.rocksdb_block_cache_bytes,
        "write_buffer_size": 8 * 1024 * 1024,
        "max_write_buffer_number": 2,
    }
    tables: dict[str, Any] = {}
    for stage in STAGES:
        if stage.is_global:
            continue  # the catalogue: stream/engine/catalog_feed.py
        # key_type/value_type=bytes is what makes Faust use the raw serializer for the
        # changelog; a faust.Schema here leaves it at JSON, and restoring a table from its
        # changelog then fails forever.
        tables[stage.name] = app.Table(
            table_name(stage),
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
            options=dict(options),  # Faust pops keys from it: one dict per table
            extra_topic_configs=dict(COMPACT_TUNING),
            help=f"state of stage {stage.name}",
        )
    return tables


def _bind_catalog_feed(app: faust.App, feed: CatalogFeed, runner: Runner, output: Output) -> None:
    @app.task
    async def start_catalog_feed() -> None:
        def sink(out: Outgoing) -> None:
            output.send(out.topic, out.key, out.value)

        loop = asyncio.get_running_loop()
        # The loop the worker actually runs on (settings.event_loop): uvloop or asyncio.
        log.info("event loop: %s", type(loop).__module__.split(".")[0])
        feed.sink = sink
        if feed.runner is None:  # not caught up by run_worker (an embedded app)
            feed.runner = runner
        feed.start(loop)


def _bind_liveness(
    app: faust.App, settings: Settings, metrics: Metrics, waits: RegistryWaits
) -> LivenessMonitor:
    """Is the group progressing? Read from the broker, also while this worker holds nothing;
    its verdict is ``/healthz``."""
    liveness = LivenessMonitor(
        app,
        metrics,
        settings.broker,
        settings.app_id,
        GROUP_INPUTS,
        settings.partitions,
        settings.stall_after_s,
        restart_stuck_after_s=settings.restart_stuck_after_s,
        on_stuck=lambda reason: fatal_exit(f"a partition does not advance: {reason}", EXIT_STUCK),
        may_restart=lambda: not (app.in_recovery or app.rebalancing or waits),
        recovering=lambda: app.in_recovery,
    )
    _run_from_start(app, lambda: liveness.run(COLLECT_INTERVAL_S))

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        now_ms = int(time.time() * 1000)
        health = liveness.health
        if health.ok:
            return web.json({"status": "ok", "time_ms": now_ms})
        body = {"status": "stalled", "stalled": health.stalled, "reason": health.reason}
        return web.json({**body, "time_ms": now_ms}, status=503)

    return liveness


def _bind_serving(
    app: faust.App,
    settings: Settings,
    rules: Rules,
    metrics: Metrics,
    codec: Codec,
    tables: dict[str, Any],
) -> None:
    """The HTTP API (stream/serve/) and the live feed behind its page."""
    live = LiveFeed(settings.broker, codec, settings.partitions)
    Api(
        app,
        settings,
        rules,
        metrics,
        codec,
        tables[personal_routing.STAGE],
        tables[household_bonus.STAGE],
        live,
    ).bind()

    @app.task
    async def start_live_feed() -> None:
        live.start(asyncio.get_running_loop())


def _bind_offset_tracking(app: faust.App, settings: Settings, offsets: OffsetTracker) -> None:
    background: set[asyncio.Future[None]] = set()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def expect_starts(sender: Any, assigned: Any, **kwargs: Any) -> None:
        # Where each assigned input partition must start: the group's committed offsets.
        # Read in the background (a few admin requests) so the rebalance is not held up.
        tps = {(tp.topic, tp.partition) for tp in assigned if tp.topic in GROUP_INPUTS}
        if tps:
            task = asyncio.ensure_future(offsets.read_starts(settings.broker, settings.app_id, tps))
            background.add(task)
            task.add_done_callback(background.discard)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_offsets(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # Another worker may process them meanwhile: a jump after they come back is not
        # a gap (stream/engine/offsets.py).
        offsets.forget((tp.topic, tp.partition) for tp in revoked)


def _run_from_start(app: faust.App, coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``coroutine()`` as soon as the app starts, not after its tables have recovered.

    Faust starts ``app.task``/``app.timer`` only after the first assignment's recovery; the
    liveness check must run before that (a worker that never gets a partition is what it
    is there to see). The task belongs to the app: cancelled when the app stops.
    """
    on_start = app.on_start

    async def start_then_run() -> None:
        await on_start()
        app.add_future(coroutine())

    app.on_start = start_then_run  # type: ignore[method-assign]
