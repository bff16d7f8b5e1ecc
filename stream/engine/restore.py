"""Bulk restore of the worker's tables from their changelogs, before Faust starts.

Faust restores a table partition by passing every changelog record through its consumer,
the Conductor, a queue and a per-record recovery loop: 7 763 records/s measured on this
machine, so a worker with the national state (18.2 M state records) would restore for about
40 minutes; this module takes an estimated 6 (BENCHMARKS.md). It does the same work before
the Faust worker starts: librdkafka reads each changelog partition from the offset its local
database holds to the high watermark of now, the records are written to the partition's
RocksDB with the same raw puts and deletes as ``faust.stores.rocksdb.Store.apply_changelog_batch``,
and the offset key Faust keeps in the database is set to the last offset applied. Faust's own
recovery then starts from there and only reads what was written since.

It restores every partition, not only the ones the group will assign: the assignment is not
known before the worker joins. A partition that goes to another worker then stays at the
offset restored here, and so does a partition Faust owned once and lost in a rebalance. If
such a database is assigned again after the changelog's tombstones were compacted away
(``delete.retention.ms``, 24 h: ``stream.local.topic_admin.COMPACT_TUNING``), recovery from its old
offset would never see those deletions and deleted keys, purged personal data among them,
would come back. So every partition database carries a *synced-at* time in a sidecar file
(``SYNCED_FILE`` in the table directory): when the database held everything its changelog
had. The bulk restore sets it; the running worker sets it for the partitions it owns once
recovery is complete (``mark_synced``). At start, before anything opens the databases,
:func:`wipe_unsynced` deletes every partition database without one, or with one older than
half the tombstone retention; those are restored from the changelog's start.

Local state is trusted only after a clean stop (``worker.discard_state_unless_stopped_cleanly``
runs first), and a restore that is interrupted leaves no clean-stop marker, so the next
start discards and restores again. A database whose offset key is beyond the changelog's high
watermark, or below its start (a recreated topic, another cluster's disk), is deleted and
restored from the start.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from stream.engine.patches import (
    ALL_BROKERS_DOWN,
    MSG_TIMED_OUT,
    PARTITION_EOF,
    RESOLVE,
    TIMED_OUT,
    TRANSPORT,
)
from stream.local.clients import client_config_for
from stream.local.topic_admin import COMPACT_TUNING

log = logging.getLogger(__name__)

# Faust's key for the changelog offset a partition database holds (faust/stores/rocksdb.py).
OFFSET_KEY = b"__faust\0offset__"
BATCH_RECORDS = 10_000
PROGRESS_EVERY_S = 5.0
# consume() returns at BATCH_RECORDS records or after this wait: every partition that has
# fewer records pays it once (0.5 s cost ~8 s on a start with 16 small partitions).
CONSUME_WAIT_S = 0.1
# Sidecar in the table directory: partition database name -> synced-at (UTC epoch ms).
SYNCED_FILE = ".synced-at.json"
# A database older than this may have missed tombstones that compaction has since removed.
MAX_UNSYNCED_MS = int(COMPACT_TUNING["delete.retention.ms"]) // 2
# Consumer errors librdkafka reports and recovers from by itself: the deadline bounds them.
TRANSIENT_ERRORS = frozenset(
    {
        TRANSPORT,
        ALL_BROKERS_DOWN,
        TIMED_OUT,
        MSG_TIMED_OUT,
        RESOLVE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
    }
)


class StaleDatabase(RuntimeError):
    """The database's offset key does not fit its changelog: it must be deleted and restored."""


@dataclass
class PartitionRestore:
    topic: str
    partition: int
    start: int  # first offset read
    end: int  # high watermark when the restore started
    records: int = 0


def persisted_offset(db: Any) -> int | None:
    raw = db.get(OFFSET_KEY)
    return None if raw is None else int(raw)


def load_synced(tabledir: Path) -> dict[str, int]:
    try:
        data = json.loads((tabledir / SYNCED_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save_synced(tabledir: Path, synced: dict[str, int]) -> None:
    tabledir.mkdir(parents=True, exist_ok=True)
    tmp = tabledir / (SYNCED_FILE + ".tmp")
    tmp.write_text(json.dumps(synced, sort_keys=True))
    os.replace(tmp, tabledir / SYNCED_FILE)


def mark_synced(tabledir: Path, db_paths: Iterable[Path], at_ms: int) -> None:
    """Record that each database held everything its changelog had at ``at_ms``."""
    names = [p.name for p in db_paths]
    if not names:
        return
    synced = load_synced(tabledir)
    for name in names:
        synced[name] = max(at_ms, synced.get(name, at_ms))
    _save_synced(tabledir, synced)


def wipe_unsynced(
    tabledir: Path,
    now_ms: int | None = None,
    max_age_ms: int = MAX_UNSYNCED_MS,
    skip: frozenset[str] = frozenset(),
) -> int:
    """Delete the partition databases not known to be in sync within ``max_age_ms``.

    Run at start before anything opens them, and by the running worker with ``skip`` = the
    databases Faust has open (the others are partitions it does not own: restored at start,
    or revoked). Returns how many were deleted; each is restored from its changelog's start
    if it is assigned again (by the bulk restore or by Faust's recovery).
    """
    if not tabledir.is_dir():
        return 0
    now = int(time.time() * 1000) if now_ms is None else now_ms
    synced = load_synced(tabledir)
    wiped = 0
    for db in sorted(tabledir.glob("*.db")):
        if db.name in skip:
            continue
        at = synced.get(db.name)
        if at is None or now - at > max_age_ms:
            shutil.rmtree(db)
            wiped += 1
    kept = {name: at for name, at in synced.items() if (tabledir / name).is_dir()}
    if kept != synced or wiped:
        _save_synced(tabledir, kept)
    if wiped:
        log.warning(
            "deleted %d table partition database(s) not known to be in sync with their "
            "changelog within %.0f h (they may have missed deletions): restored from the "
            "start if assigned",
            wiped,
            max_age_ms / 3_600_000,
        )
    return wiped


def restore_partition(
    consumer: Any,
    topic: str,
    partition: int,
    db: Any,
    timeout_s: float = 600.0,
    on_progress: Callable[[int], None] | None = None,
) -> PartitionRestore:
    """Apply ``topic[partition]`` from after ``db``'s offset key up to today's high watermark.

    Records are written in batches, each followed by the offset key, so the database never
    claims more than it holds. Raises :class:`StaleDatabase` when the offset key is beyond
    the high watermark or below the changelog's start. ``consumer`` is a confluent-kafka
    Consumer with ``enable.partition.eof``.
    """
    from rocksdict import WriteBatch

    held = persisted_offset(db)
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
    if held is not None and (held >= high or held + 1 < low):
        raise StaleDatabase(
            f"{topic}[{partition}]: the database holds offset {held}, the changelog "
            f"has offsets {low}..{high - 1}"
        )
    start = low if held is None else held + 1
    result = PartitionRestore(topic, partition, start, high)
    if start >= high:
        return result
    consumer.assign([TopicPartition(topic, partition, start)])
    batch = WriteBatch(raw_mode=True)
    in_batch = 0
    last = start - 1
    done = False
    deadline = time.monotonic() + timeout_s
    try:
        while not done and last < high - 1:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic}[{partition}]: changelog not read to offset {high} in "
                    f"{timeout_s:.0f}s (at {last})"
                )
            for msg in consumer.consume(BATCH_RECORDS, timeout=CONSUME_WAIT_S):
                err = msg.error()
                if err is not None:
                    if err.code() == PARTITION_EOF:
                        # At the end of what the broker has: compaction may have removed
                        # the records just below the high watermark.
                        if (msg.offset() or 0) >= high:
                            done = True
                            break
                        continue
                    if err.code() in TRANSIENT_ERRORS and not err.fatal():
                        log.warning("restoring %s[%d]: %s (retrying)", topic, partition, err)
                        continue
                    raise RuntimeError(f"{topic}[{partition}]: {err}")
                if msg.topic() != topic or msg.partition() != partition:
                    raise RuntimeError(
                        f"{topic}[{partition}]: got a record of {msg.topic()}[{msg.partition()}]"
                    )
                offset = msg.offset() or 0
                if offset >= high:
                    done = True  # written since we started: Faust's recovery reads it
                    break
                key, value = msg.key(), msg.value()
                if key is not None:
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)
                    in_batch += 1
                    result.records += 1
                last = max(last, offset)
            if in_batch >= BATCH_RECORDS:
                batch.put(OFFSET_KEY, str(last).encode())
                db.write(batch)
                batch = WriteBatch(raw_mode=True)
                in_batch = 0
                if on_progress is not None:
                    on_progress(result.records)
        # Everything below the high watermark is applied (a compacted-away tail included).
        batch.put(OFFSET_KEY, str(high - 1).encode())
        db.write(batch)
    finally:
        consumer.unassign()
    return result


def restore_consumer(bootstrap: str) -> Consumer:
    return Consumer(
        client_config_for(
            bootstrap,
            **{
                "group.id": "purchase-stream-restore",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
            },
        )
    )


def restore_tables(
    bootstrap: str,
    tables: Iterable[Any],
    partitions: int,
    timeout_s: float = 3600.0,
    tabledir: Path | None = None,
    consumer: Any = None,
) -> list[PartitionRestore]:
    """Bulk-restore every partition of every Faust ``rocksdb://`` table in ``tables``.

    Opens each partition database as Faust does (``table.data.rocksdb_options``), and closes
    it again before Faust opens it. With ``tabledir``, records each restored database's
    synced-at time (:func:`mark_synced`).
    """
    own_consumer = consumer is None
    consumer = consumer or restore_consumer(bootstrap)
    started = time.monotonic()
    done: list[PartitionRestore] = []
    total = 0
    last_report = [started]
    try:
        existing = consumer.list_topics(timeout=30).topics
        for table in tables:
            store = table.data
            topic = table.changelog_topic.get_topic_name()
            meta = existing.get(topic)
            if meta is None or meta.error is not None:
                continue  # no changelog yet (the first start): nothing to restore
            for p in sorted(meta.partitions)[:partitions]:
                path = store.partition_path(p)
                path.parent.mkdir(parents=True, exist_ok=True)

                def progress(n: int, topic: str = topic, p: int = p, before: int = total) -> None:
                    now = time.monotonic()
                    if now - last_report[0] >= PROGRESS_EVERY_S:
                        last_report[0] = now
                        log.info(
                            "restoring %s[%d]: %d records (%d in all so far, %.0fs)",
                            topic,
                            p,
                            n,
                            before + n,
                            now - started,
                        )

                # The database then holds everything the changelog had before this moment.
                synced_at = int(time.time() * 1000)
                db = store.rocksdb_options.open(path)
                try:
                    try:
                        r = restore_partition(
                            consumer, topic, p, db, timeout_s=timeout_s, on_progress=progress
                        )
                    except StaleDatabase as exc:
                        log.warning("%s: deleting it and restoring from the start", exc)
                        db.close()
                        shutil.rmtree(path)
                        db = store.rocksdb_options.open(path)
                        r = restore_partition(
                            consumer, topic, p, db, timeout_s=timeout_s, on_progress=progress
                        )
                finally:
                    db.close()
                if tabledir is not None:
                    mark_synced(tabledir, [path], synced_at)
                total += r.records
                done.append(r)
    finally:
        if own_consumer:
            consumer.close()
    elapsed = time.monotonic() - started
    if total:
        log.info(
            "tables restored from their changelogs: %d records in %.1fs (%.0f/s)",
            total,
            elapsed,
            total / elapsed if elapsed else 0.0,
        )
    return done
