"""Bulk restore of the worker's tables from their changelogs, before Faust starts.

Faust restores a table partition by passing every changelog record through its consumer,
the Conductor, a queue and a per-record recovery loop: about 4 800 records/s on this
machine (BENCHMARKS.md), so a worker with the national register (8 M+ state records) would
spend about half an hour restoring. This module does the same work before the Faust worker
starts: librdkafka reads each changelog partition from the offset its local database holds
to the high watermark of now, the records are written to the partition's RocksDB with the
same raw puts and deletes as ``faust.stores.rocksdb.Store.apply_changelog_batch``, and the
offset key Faust keeps in the database is set to the last offset applied. Faust's own
recovery then starts from there and only reads what was written since.

It restores every partition, not only the ones the group will assign: the assignment is not
known before the worker joins. A partition that goes to another worker is left consistent
up to its offset key, and if it is assigned here later, Faust restores from that offset on.
Local state is trusted only after a clean stop (``worker.discard_state_unless_stopped_cleanly``
runs first), and a restore that is interrupted leaves no clean-stop marker, so the next
start discards and restores again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from stream.admin import _client_config

log = logging.getLogger(__name__)

# Faust's key for the changelog offset a partition database holds (faust/stores/rocksdb.py).
OFFSET_KEY = b"__faust\0offset__"
BATCH_RECORDS = 10_000
PROGRESS_EVERY_S = 5.0


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


def restore_partition(
    consumer: Consumer,
    topic: str,
    partition: int,
    db: Any,
    timeout_s: float = 600.0,
    on_progress: Callable[[int], None] | None = None,
) -> PartitionRestore:
    """Apply ``topic[partition]`` from after ``db``'s offset key up to today's high watermark.

    Records are written in batches, each followed by the offset key, so the database never
    claims more than it holds.
    """
    from rocksdict import WriteBatch

    held = persisted_offset(db)
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
    start = max(low, held + 1) if held is not None else low
    result = PartitionRestore(topic, partition, start, high)
    if start >= high:
        return result
    consumer.assign([TopicPartition(topic, partition, start)])
    batch = WriteBatch(raw_mode=True)
    in_batch = 0
    last = start - 1
    deadline = time.monotonic() + timeout_s
    try:
        while last < high - 1:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic}[{partition}]: changelog not read to offset {high} in "
                    f"{timeout_s:.0f}s (at {last})"
                )
            msgs = consumer.consume(BATCH_RECORDS, timeout=0.5)
            if not msgs:
                # Compaction may have removed the records just below the high watermark.
                position = consumer.position([TopicPartition(topic, partition)])[0].offset
                if position >= high:
                    break
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    raise RuntimeError(f"{topic}[{partition}]: {err}")
                offset = msg.offset() or 0
                if offset >= high:
                    continue  # written since we started: Faust's recovery reads it
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


def restore_tables(
    bootstrap: str,
    tables: Iterable[Any],
    partitions: int,
    timeout_s: float = 3600.0,
) -> list[PartitionRestore]:
    """Bulk-restore every partition of every Faust ``rocksdb://`` table in ``tables``.

    Opens each partition database as Faust does (``table.data.rocksdb_options``), and closes
    it again before Faust opens it.
    """
    consumer = Consumer(
        _client_config(
            bootstrap,
            **{
                "group.id": "purchase-stream-restore",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "fetch.wait.max.ms": 100,
            },
        )
    )
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
                db = store.rocksdb_options.open(path)

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

                try:
                    r = restore_partition(
                        consumer, topic, p, db, timeout_s=timeout_s, on_progress=progress
                    )
                finally:
                    db.close()
                total += r.records
                done.append(r)
    finally:
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
