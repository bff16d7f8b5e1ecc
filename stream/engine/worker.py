"""The worker process: start-up checks, local state trust, then Faust's worker in the foreground.

The app itself (agents, tables, timers, pages) is built by :func:`stream.engine.app.create_app`;
the commit rule is in stream/engine/agents.py, the library patches in stream/engine/patches.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import time
from pathlib import Path

from stream.engine.app import create_app
from stream.engine.restore import restore_tables, wipe_unsynced
from stream.engine.store_patches import STATE_FLUSH_FAILURES
from stream.local.topic_admin import max_message_bytes
from stream.local.topics import TOPICS
from stream.serde.codec import Codec, DecodeError
from stream.serde.registry_store import RegistryAccessError, RegistryError
from stream.settings import Settings
from topologies.rules import Rules

log = logging.getLogger(__name__)

# Room left under the broker's max.message.bytes for the record batch's own header.
RECORD_HEADROOM_BYTES = 4_096

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
    # The whole catalogue before the first receipt (stream/engine/catalog_feed.py).
    parts["catalog_feed"].catch_up(parts["runner"])
    worker = Worker(app, loglevel=settings.log_level, quiet=True)
    # Faust's terminal spinner, when the level is WARNING or above, sets the root logger to
    # DEBUG (so it can spin on every record): aiokafka's per-request debug() calls then build
    # LogRecords that are filtered only at the handler, ~10 % of the worker's CPU in a py-spy
    # profile (benchmarks/results/2026-12-07-diary.md, section 3). We never run on a terminal
    # that needs it.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        # Normally empty by now (Faust flushed it before its last commit). Records it could
        # not deliver mean local state is ahead of the changelog: no clean-stop marker.
        delivered = parts["output"].close(10)
        # Faust flushed the producer and committed on the way out; a crashed service, an
        # error exit or os._exit (registry outage) leaves no marker.
        # The table databases are written without RocksDB's WAL: Faust's store flushed each
        # one when it stopped (store_patches.table_stores_without_wal); a failed flush means local
        # state may be behind its persisted offsets, so no marker either.
        flushed = not STATE_FLUSH_FAILURES
        if delivered and flushed and exc.code in (0, None) and app.crash_reason is None:
            mark_clean_stop(tabledir)
        elif not flushed:
            log.error("table state not flushed at stop (%s): no clean stop", STATE_FLUSH_FAILURES)
        raise
