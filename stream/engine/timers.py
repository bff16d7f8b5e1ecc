"""Time-driven work on the partitions this worker owns: retention purge, parking expiry,
Bonus close (each stage's ``Stage.tick``), and keeping the record of which partition
databases are in sync with their changelogs (stream/engine/restore.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import faust

from stream.engine.agents import fatal_exit
from stream.engine.output import Output
from stream.engine.restore import mark_synced, wipe_unsynced
from stream.engine.runner import Runner
from stream.engine.state import TableState
from stream.engine.store_patches import open_partition_dbs
from topologies.pipeline import STAGES


def bind_ticks(
    app: faust.App,
    interval_s: float,
    tables: dict[str, Any],
    changelogs: dict[str, Any],
    runner: Runner,
    output: Output,
) -> None:
    """Run every stage's tick on ``app`` each ``interval_s`` seconds."""

    @app.timer(interval=interval_s)
    async def tick_stages() -> None:
        if app.should_stop:
            # Stopping: the tables may be flushed and dropped already (a write now would
            # reopen a database that nothing flushes again).
            return
        try:
            tick(app, tables, changelogs, runner, output, int(time.time() * 1000))
        except Exception as exc:  # noqa: BLE001 - a crashed timer must not leave the worker up
            fatal_exit(f"time-driven work failed: {type(exc).__name__}")


def tick(
    app: faust.App,
    tables: dict[str, Any],
    changelogs: dict[str, Any],
    runner: Runner,
    output: Output,
    now_ms: int,
) -> None:
    """One round, with no await between state writes and sends (see stream/engine/agents.py)."""
    active = app.assignor.assigned_actives()
    recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
    if recovered and not app.rebalancing and not app.in_recovery:
        _keep_sync_record(app, tables, active, now_ms)
    for stage in STAGES:
        if stage.tick is None or stage.is_global:
            continue
        owned = sorted({tp.partition for tp in active if tp.topic == stage.inputs[0]})
        for partition in owned:
            state = TableState(tables[stage.name], partition, changelogs[stage.name])
            for out in runner.tick(stage, state, now_ms, partition):
                output.send(out.topic, out.key, out.value)
    output.poll()


def _keep_sync_record(app: faust.App, tables: dict[str, Any], active: Any, now_ms: int) -> None:
    tabledir = Path(app.conf.tabledir)
    # The owned partitions' databases hold everything their changelogs have: record it, so
    # a later start keeps them (stream/engine/restore.py, wipe_unsynced).
    mark_synced(
        tabledir,
        [
            tables[stage.name].data.partition_path(tp.partition)
            for stage in STAGES
            if not stage.is_global
            for tp in active
            if tp.topic == stage.inputs[0]
        ],
        now_ms,
    )
    # Databases of partitions it does not own (restored at start, or revoked) are deleted
    # before they are old enough to have missed a compacted-away deletion.
    wipe_unsynced(
        tabledir,
        now_ms,
        skip=frozenset(
            table.data.partition_path(p).name
            for table in tables.values()
            for p in open_partition_dbs(table)
        ),
    )
