"""The Faust worker: one agent and one RocksDB-backed table per stage of topologies.pipeline.

Agents are thin adapters: each raw record (bytes in, bytes out) goes through
:class:`stream.engine.runner.Runner` — the same code ``replay`` runs — with the stage's table
partition as state, and the records it returns are sent. Faust flushes the producer
before it commits offsets, so delivery is at-least-once; every stage is idempotent by
receipt id (see the topology modules), which makes the effect exactly-once.

Facts that shape this (faust-streaming 0.15.x, see docs/architecture.md):
- ``kafka://`` (aiokafka) transport; ``confluent://`` skips Faust's partition assignor.
- agent ``concurrency=1``: offsets must not be committed past in-flight events.
- ``web_tables_enabled=False``: the built-in ``/table/`` pages would serve personal data.
- ``rocksdb://`` tables open one database per partition: the block cache is set explicitly
  (Faust's default is 2 GiB each).
- every worker reads the whole catalogue itself (stream/simulator/catalog_feed.py: a Faust
  GlobalTable stalled workers that restored it); the tables are partitioned like their
  input topics, which are co-partitioned by key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, NoReturn

import faust
from aiokafka.partitioner import murmur2
from prometheus_client import CollectorRegistry

from stream.engine.liveness import LivenessMonitor
from stream.engine.membership import group_instance_id, static_member_leaves_on_stop
from stream.engine.metrics import Metrics, add_process_metrics
from stream.engine.observability import COLLECT_INTERVAL_S, WorkerCollector
from stream.engine.output import Output, attach
from stream.engine.restore import mark_synced, restore_tables, wipe_unsynced
from stream.engine.runner import Outgoing, RawRecord, Runner
from stream.engine.state import TableState
from stream.kafka_config import configure as configure_kafka
from stream.local.admin import (
    COMPACT_TUNING,
    AdminError,
    committed_offsets,
    max_message_bytes,
    read_range,
)
from stream.local.topics import TOPICS
from stream.serde.codec import Codec, DecodeError
from stream.serde.schema_registry import (
    RegistryAccessError,
    RegistryError,
    RegistryUnavailableError,
    registry_from_settings,
)
from stream.serve.api import MAX_BODY_BYTES, Api, edge
from stream.serve.live import LiveFeed
from stream.settings import Settings
from stream.simulator.catalog_feed import CatalogFeed
from topologies import household_bonus, personal_routing
from topologies.pipeline import GROUP_INPUTS, STAGES, Stage
from topologies.rules import Rules

log = logging.getLogger(__name__)

# take_events batch: up to this many events, or what arrived within this many seconds.
BATCH_MAX = 500
# 0.01 s, not 0.05: each hop waited up to the window for a batch to fill, two hops before
# receipts.totals; p50 at 200/s 130 -> 87 ms, throughput within noise (BENCHMARKS.md).
BATCH_WITHIN_S = 0.01
# Exit code when the worker stops during a registry outage with records unprocessed.
EXIT_UNPROCESSED = 75
# Exit code when processing or producing failed in a way a dead letter cannot cover (a
# delivery the broker refused, a bug in the adapter): the supervisor restarts the worker
# from the last commit (EX_SOFTWARE).
EXIT_FAILED = 70
# Exit code when a held partition stopped advancing (stream/engine/liveness.py): restart me.
EXIT_STUCK = 71
# Stages waiting for the schema registry right now: a partition that waits for it is not
# stuck (stream/engine/liveness.py must not restart the worker for it).
_registry_waiting: set[str] = set()
# Room left under the broker's max.message.bytes for the record batch's own header.
RECORD_HEADROOM_BYTES = 4_096


def fatal_exit(reason: str, code: int = EXIT_FAILED) -> NoReturn:
    """Stop the process now, committing nothing: the commit rule's last resort.

    Faust keeps a worker up when one of its agents crashes, and acks (then commits) the
    batch the crashed agent was in: the records after a failure would be skipped with their
    offsets committed. ``os._exit`` runs no Faust shutdown, so no offset moves past this
    point; outputs not yet delivered are lost with the process but their inputs were not
    committed, and local state is restored from the changelogs at the next start (no
    clean-stop marker). ``reason`` must not carry record content or ids.
    """
    log.critical("stopping the worker without committing: %s", reason)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(code)


RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def strict_producer_flush() -> None:
    """Make Faust's producer-buffer flush wait until the buffer is really empty.

    Faust flushes its send buffer (the API's audit records; stage outputs and changelogs
    go through stream/engine/output.py, whose flush is chained to this one) before it commits
    offsets, but ``ProducerBuffer.flush`` gives up as soon as 0.1 s pass
    without a message sent -- on a loaded machine that happens with messages still
    buffered, the offsets are committed anyway, and the outputs are lost if the worker then
    stops (seen: a receipt consumed by card_join whose ``receipts.identified`` record never
    reached the broker after a SIGTERM). Here the flush returns only when no message is
    buffered and none is on its way into the client (aiokafka's accumulator is flushed
    after it, completely, by Faust). A buffer that can no longer send raises instead, and
    the commit does not happen: the records are read again after a restart.
    """
    from faust.transport.producer import ProducerBuffer

    if getattr(ProducerBuffer, "_purchase_stream_strict", False):
        return
    send_pending = ProducerBuffer._send_pending

    async def _send_pending(self: Any, fut: Any) -> None:
        self._ps_in_flight = getattr(self, "_ps_in_flight", 0) + 1
        try:
            await send_pending(self, fut)
        finally:
            self._ps_in_flight -= 1

    async def flush(self: Any) -> None:
        while self.size or getattr(self, "_ps_in_flight", 0):
            if self.state != "running":
                raise RuntimeError(f"cannot flush: producer buffer {self.state} with messages")
            self.message_sent.clear()
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
            except TimeoutError:
                continue

    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = flush  # type: ignore[method-assign]
    ProducerBuffer._purchase_stream_strict = True  # type: ignore[attr-defined]


# The shortest time between two fetch requests of the worker's consumer when the first
# came back empty (see idle_fetch_wait).
IDLE_FETCH_WAIT_S = 0.01


def idle_fetch_wait(seconds: float = IDLE_FETCH_WAIT_S) -> None:
    """Make aiokafka wait before re-fetching after an empty fetch that came back early.

    Kafka holds a fetch until data arrives or ``fetch_max_wait_ms`` passes (Faust asks for
    1.5 s), so an idle consumer sends a request or so a second. The embedded noida-db
    ignores the wait and answers at once: aiokafka then re-fetches in a tight loop, ~2 400
    requests a second from one consumer on an idle topic (measured), which cost a worker's
    consumer thread ~0.45 of a core and the broker as much again, even while the worker had
    nothing to do -- on 2 cores, CPU taken from the processing itself (BENCHMARKS.md). Here a
    fetch that returned no records sooner than ``seconds`` after it was sent is followed by
    a pause for the rest of ``seconds``: no effect against a broker that long-polls (its
    empty answers take ``fetch_max_wait_ms``), and at most ``seconds`` more latency for the
    first record after a quiet spell on one that does not.
    """
    from aiokafka.consumer.fetcher import Fetcher

    Fetcher._ps_idle_fetch_wait_s = seconds
    if getattr(Fetcher, "_ps_idle_fetch_wait_patched", False):
        return
    proc = Fetcher._proc_fetch_request

    async def _proc_fetch_request(self: Any, assignment: Any, node_id: Any, request: Any) -> Any:
        started = time.monotonic()
        got_records = await proc(self, assignment, node_id, request)
        if not got_records and assignment.active:
            rest = Fetcher._ps_idle_fetch_wait_s - (time.monotonic() - started)
            if rest > 0:
                try:
                    await asyncio.sleep(rest)
                except asyncio.CancelledError:
                    # Closing or unassigned: like aiokafka's own fetch task, end quietly
                    # (Fetcher.close() awaits the cancelled task).
                    return got_records
        return got_records

    Fetcher._proc_fetch_request = _proc_fetch_request
    Fetcher._ps_idle_fetch_wait_patched = True


EVENT_LOOPS = ("uvloop", "asyncio")


def use_event_loop(name: str) -> None:
    """Select the worker's asyncio event loop before Faust creates it.

    "uvloop" (libuv, what ``faust worker --loop uvloop`` selects through mode.loop) or
    "asyncio" (the standard library's). Must run before the app or the worker touches a loop.
    """
    if name not in EVENT_LOOPS:
        raise ValueError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}, not {name!r}")
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())


def table_name(stage: Stage) -> str:
    return f"{stage.name}-store"


def create_app(
    settings: Settings,
    rules: Rules,
    registry: CollectorRegistry | None = None,
    codec: Codec | None = None,
) -> faust.App:
    strict_producer_flush()
    idle_fetch_wait()
    static_member_leaves_on_stop()
    # TLS/SASL for this process's Kafka clients: Faust's below, confluent-kafka's everywhere.
    kafka_security = configure_kafka(settings)
    app = faust.App(
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
    registry = registry if registry is not None else CollectorRegistry()
    metrics = Metrics(registry)
    add_process_metrics(registry)
    codec = codec or Codec(registry_from_settings(settings))
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
            continue  # the catalogue: stream/simulator/catalog_feed.py
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
    changelogs = {name: output.changelog(table) for name, table in tables.items()}

    for stage in STAGES:
        if not stage.is_global:
            _bind_agent(
                app,
                stage,
                tables[stage.name],
                runner,
                output,
                changelogs[stage.name],
                settings.broker,
            )

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

    from faust.sensors.prometheus import setup_prometheus_sensors

    setup_prometheus_sensors(app, registry=registry, name_prefix="faust")
    app.monitor = _lean_monitor(app.monitor)

    # Consumer lag, state sizes and parked receipts: read periodically, on every worker.
    collector = WorkerCollector(app, metrics, tables, settings.partitions)
    app.timer(interval=COLLECT_INTERVAL_S, name="purchase_stream.metrics")(collector.collect)

    # Is the group progressing? Read from the broker, also while this worker holds nothing.
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
        may_restart=lambda: not (app.in_recovery or app.rebalancing or _registry_waiting),
    )
    _run_from_start(app, lambda: liveness.run(COLLECT_INTERVAL_S))

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

    @app.timer(interval=settings.tick_interval_s)
    async def tick_stages() -> None:
        try:
            _tick_stages()
        except Exception as exc:  # noqa: BLE001 - a crashed timer must not leave the worker up
            fatal_exit(f"time-driven work failed: {type(exc).__name__}")

    def _tick_stages() -> None:
        # Time-driven work on the partitions this worker owns (retention purge, parking
        # expiry, Bonus close), without an await between state writes and sends.
        now_ms = int(time.time() * 1000)
        active = app.assignor.assigned_actives()
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        if recovered and not app.rebalancing and not app.in_recovery:
            # The owned partitions' databases hold everything their changelogs have: record
            # it, so a later start keeps them (stream/engine/restore.py, wipe_unsynced).
            mark_synced(
                Path(app.conf.tabledir),
                [
                    tables[stage.name].data.partition_path(tp.partition)
                    for stage in STAGES
                    if not stage.is_global
                    for tp in active
                    if tp.topic == stage.inputs[0]
                ],
                now_ms,
            )
            # Databases of partitions it does not own (restored at start, or revoked) are
            # deleted before they are old enough to have missed a compacted-away deletion.
            wipe_unsynced(
                Path(app.conf.tabledir),
                now_ms,
                skip=frozenset(
                    table.data.partition_path(p).name
                    for table in tables.values()
                    for p in table.data._dbs
                ),
            )
        for stage in STAGES:
            if stage.tick is None or stage.is_global:
                continue
            owned = sorted({tp.partition for tp in active if tp.topic == stage.inputs[0]})
            for partition in owned:
                state = TableState(tables[stage.name], partition, changelogs[stage.name])
                for out in runner.tick(stage, state, now_ms, partition):
                    output.send(out.topic, out.key, out.value)
        output.poll()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def expect_starts(sender: Any, assigned: Any, **kwargs: Any) -> None:
        # Where each assigned input partition must start: the group's committed offsets.
        # Read in the background (a few admin requests) so the rebalance is not held up.
        tps = {(tp.topic, tp.partition) for tp in assigned if tp.topic in GROUP_INPUTS}
        if tps:
            task = asyncio.ensure_future(_read_starts(settings.broker, settings.app_id, tps))
            _background.add(task)
            task.add_done_callback(_background.discard)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_offsets(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # Another worker may process them meanwhile: a jump after they come back is not
        # a gap (see _offset_gap).
        for tp in revoked:
            _last_offsets.pop((tp.topic, tp.partition), None)
            _start_offsets.pop((tp.topic, tp.partition), None)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        now_ms = int(time.time() * 1000)
        health = liveness.health
        if health.ok:
            return web.json({"status": "ok", "time_ms": now_ms})
        body = {"status": "stalled", "stalled": health.stalled, "reason": health.reason}
        return web.json({**body, "time_ms": now_ms}, status=503)

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


def _run_from_start(app: faust.App, coroutine: Any) -> None:
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


def _lean_monitor(monitor: Any) -> Any:
    """Faust's Prometheus monitor without its per-message hooks.

    Faust calls the monitor for every record in and out of a stream, every table access and
    every send; the base Monitor keeps per-message statistics and the Prometheus one adds
    several labelled metric updates each time: 5-8 % of the worker's main thread in a py-spy
    profile (BENCHMARKS.md), for ``faust_*`` figures our own metrics already give
    (``purchase_stream_events_in_total``, ``records_out_total``, stage latency). What the
    dashboards use from Faust -- commit latency, rebalances, assignment -- comes from the
    hooks kept here.
    """
    from faust.sensors.prometheus import PrometheusMonitor

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

    return LeanPrometheusMonitor(metrics=monitor._metrics)


def _bind_agent(
    app: faust.App,
    stage: Stage,
    table: Any,
    runner: Runner,
    output: Output,
    changelog: Any,
    bootstrap: str,
) -> None:
    source = app.topic(*stage.inputs, **RAW)
    states: dict[int, TableState] = {}

    async def run_stage(stream: Any) -> None:
        # take_events, not events(): with events() a worker restored from an empty state
        # directory was seen to skip input records. Faust acks every event of a batch when
        # the loop body ends, *also when it is cancelled* (shutdown, rebalance): a batch
        # cancelled half-way would have its unprocessed records committed and lost. So a
        # batch is processed with no await at all (asyncio cancels only at awaits): steps,
        # state writes and produce() into librdkafka's queue (stream/engine/output.py), which
        # Faust's pre-commit flush waits for before it commits offsets.
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            pending = list(events)
            delay = 0.5
            while pending:
                try:
                    _process_all(pending)
                    output.poll()
                    _registry_waiting.discard(stage.name)
                except RegistryUnavailableError as exc:
                    _registry_waiting.add(stage.name)
                    # The one await point: a registry outage blocks the partition.
                    log.warning(
                        "schema registry unavailable (%s) in stage %s; %d records wait, "
                        "retry in %.1fs",
                        type(exc).__name__,
                        stage.name,
                        len(pending),
                        delay,
                    )
                    try:
                        await asyncio.sleep(delay)
                    except asyncio.CancelledError:
                        # Stopping now would ack (and so lose) the waiting records. Exit
                        # without committing instead: they are read again after a restart,
                        # and every stage is idempotent.
                        log.critical(
                            "stopped during a schema-registry outage with %d records of "
                            "stage %s unprocessed: exiting without committing them",
                            len(pending),
                            stage.name,
                        )
                        os._exit(EXIT_UNPROCESSED)
                    delay = min(delay * 2, 30.0)
                except Exception as exc:  # noqa: BLE001 - see fatal_exit
                    # Every failure a dead letter can cover became one in the runner; what
                    # reaches here (a produce the client refused, a state or adapter error)
                    # must not be acked: Faust would commit the batch and keep going.
                    msg = pending[0].message
                    fatal_exit(
                        f"stage {stage.name} failed on {msg.topic}[{msg.partition}]@{msg.offset}"
                        f": {type(exc).__name__}"
                    )

    def _process_all(pending: list[Any]) -> None:
        """Process events in order, removing each one once its outputs are buffered."""
        while pending:
            _handle(pending[0])
            pending.pop(0)

    def _handle(event: Any) -> None:
        msg = event.message
        gap = _offset_gap(stage.name, msg.topic, msg.partition, msg.offset)
        if gap is not None:
            # Blocking read (no await: see run_stage); rare. Each stage is idempotent, so a
            # record that was in fact processed before is a harmless duplicate.
            try:
                missing = read_range(bootstrap, msg.topic, msg.partition, *gap)
            except (TimeoutError, AdminError) as exc:
                # Going on would commit past records never processed.
                fatal_exit(f"stage {stage.name}: missing records could not be read: {exc}")
            log.warning(
                "stage %s: %d of %d missing records of %s[%d] read back and processed",
                stage.name,
                len(missing),
                gap[1] - gap[0] + 1,
                msg.topic,
                msg.partition,
            )
            for r in missing:
                _run(RawRecord(msg.topic, msg.partition, r.offset, r.timestamp, r.key, r.value))
        _run(
            RawRecord(
                msg.topic,
                msg.partition,
                msg.offset,
                int(msg.timestamp * 1000),
                msg.key,
                msg.value,
            )
        )
        _offset_done(msg.topic, msg.partition, msg.offset)

    def _run(rec: RawRecord) -> None:
        state = states.get(rec.partition)
        if state is None:
            state = states[rec.partition] = TableState(table, rec.partition, changelog)
        # Raises RegistryUnavailableError before any state write if decoding needs the
        # registry; after the step (encoding) a retry is a harmless duplicate.
        outs = runner.process(stage, state, rec)
        # Outputs carry the source record's timestamp, so downstream stages run on the
        # same processing clock as in ``replay`` (parking windows, dedupe expiry, audit).
        ts_ms = rec.timestamp
        for out in outs:
            output.send(out.topic, out.key, out.value, timestamp_ms=ts_ms)

    run_stage.__name__ = stage.name
    app.agent(source, name=stage.name, concurrency=1)(run_stage)


_last_offsets: dict[tuple[str, int], int] = {}
# The group's committed offset of each partition at its assignment (where it must start).
_start_offsets: dict[tuple[str, int], int] = {}
_background: set[asyncio.Future[None]] = set()


async def _read_starts(bootstrap: str, group: str, tps: set[tuple[str, int]]) -> None:
    for topic in sorted({t for t, _ in tps}):
        try:
            committed = await asyncio.to_thread(committed_offsets, bootstrap, group, topic)
        except (AdminError, OSError) as exc:
            log.warning("committed offsets of %s not read (%s)", topic, type(exc).__name__)
            continue
        for partition, offset in committed.items():
            if (topic, partition) in tps and offset is not None:
                _start_offsets.setdefault((topic, partition), offset)


def _offset_gap(stage: str, topic: str, partition: int, offset: int) -> tuple[int, int] | None:
    """Log where each input partition starts; return a forward jump in its offsets.

    Offsets carry no personal data. On a compacted topic a jump is normal. Elsewhere it
    means records Faust never handed to this stage: seen on a fresh worker right after
    recovery ("Seek stream partitions to committed offsets"), a known class of Faust races
    between recovery, flow control and the fetcher (faust-streaming issues #216, #596). The
    caller reads the missing records from the broker and processes them first.
    """
    last = _last_offsets.get((topic, partition))
    if last is None:
        log.info("stage %s starts %s[%d] at offset %d", stage, topic, partition, offset)
        start = _start_offsets.get((topic, partition))
        if start is not None and offset > start and not TOPICS[topic].compacted:
            # The first record after an assignment is past where the group had committed:
            # Faust skipped the partition's first records (seen once in the chaos suite:
            # a receipt at the committed offset never processed, its successor started at).
            log.warning(
                "stage %s: %s[%d] starts at %d, the group had committed %d; reading %d..%d "
                "from the broker",
                stage,
                topic,
                partition,
                offset,
                start,
                start,
                offset - 1,
            )
            return start, offset - 1
    elif offset > last + 1 and not TOPICS[topic].compacted:
        log.warning(
            "stage %s: offsets %d..%d of %s[%d] were never delivered to this worker; "
            "reading them from the broker",
            stage,
            last + 1,
            offset - 1,
            topic,
            partition,
        )
        return last + 1, offset - 1
    return None


def _offset_done(topic: str, partition: int, offset: int) -> None:
    key = (topic, partition)
    _start_offsets.pop(key, None)  # the start is checked once, when its first record is done
    last = _last_offsets.get(key)
    if last is None or offset > last:
        _last_offsets[key] = offset


def key_partition(key: str, partitions: int) -> int:
    """The partition the Kafka default (murmur2) partitioner gives a key, as aiokafka does."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


CLEAN_STOP_MARKER = ".clean-stop"


def discard_state_unless_stopped_cleanly(tabledir: Path) -> bool:
    """Delete the local table databases unless the last worker on them stopped cleanly.

    A state write goes to the local RocksDB at once and to the changelog through the
    producer buffer; offsets are committed only after that buffer is flushed. A crash
    (SIGKILL, OOM, power) can therefore leave the local database *ahead* of the changelog:
    the records after the last commit are processed again, each stage's dedupe finds them
    already applied locally and writes nothing, and their changelog records are never
    written -- a later restore from the changelog (another worker, a fresh disk) loses
    them. So local state is trusted only after a clean stop (Faust flushed and committed,
    then :func:`mark_clean_stop`); otherwise the tables are restored from the changelogs,
    which agree with the committed offsets. (Kafka Streams wipes its stores after an
    unclean exit under exactly-once for the same reason.) Returns True when it discarded.
    """
    marker = tabledir / CLEAN_STOP_MARKER
    had_state = tabledir.is_dir() and any(tabledir.glob("*.db"))
    clean = marker.exists()
    marker.unlink(missing_ok=True)  # from here on, this run's stop decides
    if had_state and not clean:
        log.warning(
            "the last worker on %s did not stop cleanly: discarding its local table state, "
            "every table is restored from its changelog",
            tabledir,
        )
        for db in tabledir.glob("*.db"):
            shutil.rmtree(db)
        return True
    return False


def mark_clean_stop(tabledir: Path) -> None:
    if tabledir.is_dir():
        (tabledir / CLEAN_STOP_MARKER).touch()


def warm_codec(codec: Codec) -> None:
    """Every schema registered and compiled before the first record, not inside it."""
    started = time.perf_counter()
    try:
        n = codec.warm()
    except RegistryAccessError:
        raise  # wrong credentials or an untrusted certificate: stop at start (cli.main)
    except (RegistryError, DecodeError) as exc:
        # Not fatal: the first record of each topic fetches its schema, and a registry
        # outage then blocks that partition until it is back (nothing is lost).
        log.warning("schemas not prepared at start-up (%s); they load on first use", exc)
        return
    log.info("schemas of %d topics prepared in %.0f ms", n, (time.perf_counter() - started) * 1e3)


def limit_records(settings: Settings, rules: Rules) -> Rules:
    """``rules`` with each topic's record limit lowered to what the broker accepts there."""
    found = max_message_bytes(settings.broker, TOPICS)
    lower = tuple(
        (topic, limit - RECORD_HEADROOM_BYTES)
        for topic, limit in sorted(found.items())
        if limit - RECORD_HEADROOM_BYTES < rules.max_record_bytes
    )
    for topic, limit in lower:
        log.info("records to %s are limited to %d bytes by the broker", topic, limit)
    return dataclasses.replace(rules, topic_record_bytes=lower)


def run_worker(settings: Settings, rules: Rules) -> None:
    """Start the worker in the foreground (blocks until stopped by a signal)."""
    from faust.worker import Worker

    use_event_loop(settings.event_loop)
    rules = limit_records(settings, rules)
    app = create_app(settings, rules)
    tabledir = Path(app.conf.tabledir)
    # Faust configures logging only when its worker starts: let the long start-up work
    # below (restore, catalogue) report its progress at the configured level.
    logging.getLogger("stream").setLevel(settings.log_level.upper())
    discard_state_unless_stopped_cleanly(tabledir)
    # Partition databases that may have missed deletions (not in sync for half the
    # tombstone retention) are restored from the start, never resumed (stream/engine/restore.py).
    wipe_unsynced(tabledir)
    parts = app.purchase_stream  # type: ignore[attr-defined]
    # First, so wrong registry credentials stop the worker before minutes of restore.
    warm_codec(parts["codec"])
    if settings.bulk_restore:
        # Tables from their changelogs at librdkafka speed; Faust's recovery reads the rest.
        restore_tables(
            settings.broker, parts["tables"].values(), settings.partitions, tabledir=tabledir
        )
    # The whole catalogue before the first receipt (stream/simulator/catalog_feed.py).
    parts["catalog_feed"].catch_up(parts["runner"])
    worker = Worker(app, loglevel=settings.log_level, quiet=True)
    # Faust's terminal spinner, when the level is WARNING or above, sets the root logger to
    # DEBUG (so it can spin on every record): aiokafka's per-request debug() calls then build
    # LogRecords that are filtered only at the handler, ~10 % of the worker's CPU in a py-spy
    # profile (BENCHMARKS.md). We never run on a terminal that needs it.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        # Normally empty by now (Faust flushed it before its last commit). Records it could
        # not deliver mean local state is ahead of the changelog: no clean-stop marker.
        delivered = parts["output"].close(10)
        # Faust flushed the producer and committed on the way out; a crashed service, an
        # error exit or os._exit (registry outage) leaves no marker.
        if delivered and exc.code in (0, None) and app.crash_reason is None:
            mark_clean_stop(tabledir)
        raise
