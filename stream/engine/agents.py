"""The stage agents and the commit rule: what Faust may commit, and when the worker must stop.

One Faust agent per stage of topologies.pipeline. An agent is a thin adapter: each raw record
(bytes in, bytes out) goes through :class:`stream.engine.runner.Runner` -- the same code
``replay`` runs -- with the stage's table partition as state, and the records it returns are
sent. Faust flushes the producer before it commits offsets, so delivery is at-least-once;
every stage is idempotent by receipt id (see the topology modules), which makes the effect
exactly-once.

The commit rule: an input offset is committed only after every output and state write of
its record (and of every record before it) is delivered. A ``kill -9`` at any line then
loses nothing (uncommitted records are read again) and counts nothing twice (dedupe).
- agent ``concurrency=1``: offsets must not be committed past in-flight events.
- a batch is processed with no await (see :func:`bind_agent`): it cannot be cancelled
  half-way, which would ack its unprocessed records.
- what no dead letter can cover stops the process without committing (:func:`fatal_exit`).
- records Faust skipped are read back from the broker first (stream/engine/offsets.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any, NoReturn

import faust

from stream.engine import packing
from stream.engine.offsets import OffsetTracker
from stream.engine.output import Output
from stream.engine.packing import BATCH_MAX, BATCH_WITHIN_S
from stream.engine.partitioning import key_bytes_partition
from stream.engine.runner import PACKED_TOPICS, RawRecord, Runner
from stream.engine.state import TableState
from stream.local.clients import AdminError
from stream.local.offsets import read_range
from stream.serde.registry_store import RegistryUnavailableError
from topologies.pipeline import Stage

log = logging.getLogger(__name__)

# Exit code when the worker stops during a registry outage with records unprocessed.
EXIT_UNPROCESSED = 75
# Exit code when processing or producing failed in a way a dead letter cannot cover (a
# delivery the broker refused, a bug in the adapter): the supervisor restarts the worker
# from the last commit (EX_SOFTWARE).
EXIT_FAILED = 70
# Exit code when a held partition stopped advancing (stream/engine/liveness.py): restart me.
EXIT_STUCK = 71

# Raw bytes in and out: the runner decodes and encodes (stream/serde/codec.py).
RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


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


class RegistryWaits:
    """Stages waiting for the schema registry right now.

    A partition that waits for the registry is not stuck: stream/engine/liveness.py must not
    restart the worker for it.
    """

    def __init__(self) -> None:
        self.stages: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.stages)


def bind_agent(
    app: faust.App,
    stage: Stage,
    table: Any,
    runner: Runner,
    output: Output,
    changelog: Any,
    bootstrap: str,
    offsets: OffsetTracker,
    waits: RegistryWaits,
    *,
    pack: bool = True,
) -> None:
    """Make ``stage``'s agent on ``app``: its inputs through ``runner`` into ``output``.

    ``pack``: packable outputs wait for the batch's end and go as packs (settings
    ``pack_internal_topics``); off, the packer holds nothing and every output is sent as it
    is made."""
    source = app.topic(*stage.inputs, **RAW)
    states: dict[int, TableState] = {}
    partitions = app.conf.topic_partitions
    packer = packing.Packer(
        runner.rules.record_limit,
        lambda _topic, key: key_bytes_partition(key, partitions),
        PACKED_TOPICS if pack else frozenset(),
    )

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
                    _send_packs()
                    output.poll()
                    waits.stages.discard(stage.name)
                except RegistryUnavailableError as exc:
                    # What the records before the waiting one packed goes now, before the
                    # await (stream/engine/packing.py: a pack is sent within its batch).
                    try:
                        _send_packs()
                    except Exception as send_exc:  # noqa: BLE001 - see _fail
                        _fail(pending, send_exc)
                    waits.stages.add(stage.name)
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
                except Exception as exc:  # noqa: BLE001 - see _fail
                    _fail(pending, exc)

    def _fail(pending: list[Any], exc: Exception) -> NoReturn:
        """Every failure a dead letter can cover became one in the runner; what reaches here
        (a produce the client refused, a state or adapter error) must not be acked: Faust
        would commit the batch and keep going. Nothing here may raise: an exception out of
        the batch loop crashes the agent, and Faust keeps the worker up and acks the batch
        (docs/reliability.md, finding 11: a pack's send failed after every record of the
        batch was processed, and indexing the empty ``pending`` did exactly that)."""
        if pending:
            msg = pending[0].message
            where = f"on {msg.topic}[{msg.partition}]@{msg.offset}"
        else:
            where = "sending its batch's packs"
        fatal_exit(f"stage {stage.name} failed {where}: {type(exc).__name__}")

    def _send_packs() -> None:
        for out, ts_ms in packer.drain():
            output.send(out.topic, out.key, out.value, timestamp_ms=ts_ms)

    def _process_all(pending: list[Any]) -> None:
        """Process events in order, removing each one once its outputs are buffered."""
        while pending:
            _handle(pending[0])
            pending.pop(0)

    def _handle(event: Any) -> None:
        msg = event.message
        gap = offsets.gap(stage.name, msg.topic, msg.partition, msg.offset)
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
        offsets.done(msg.topic, msg.partition, msg.offset)

    def _run(rec: RawRecord) -> None:
        state = states.get(rec.partition)
        if state is None:
            state = states[rec.partition] = TableState(table, rec.partition, changelog)
        # Raises RegistryUnavailableError before any state write if decoding needs the
        # registry; after the step (encoding) a retry is a harmless duplicate.
        outs = runner.process(stage, state, rec)
        # Packed outputs wait for the end of the batch (_send_packs).
        for out, ts_ms in packing.sends(packer, stage, rec, outs):
            output.send(out.topic, out.key, out.value, timestamp_ms=ts_ms)

    run_stage.__name__ = stage.name
    app.agent(source, name=stage.name, concurrency=1)(run_stage)
