"""Bulk restore of Faust tables from their changelogs (stream/engine/restore.py), real broker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import faust
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from faust.types import TP

from stream.engine.restore import OFFSET_KEY, load_synced, restore_tables, wipe_unsynced
from stream.engine.store_patches import partition_db
from stream.kafka_config import producer_config

PARTITIONS = 4


def _table(tmp_path: Path) -> Any:
    """A table of a fresh app (a unique id: its own changelog topic on the shared broker)."""
    app_id = f"restore-{uuid.uuid4().hex[:8]}"
    app = faust.App(app_id, broker="kafka://unused:1", store="rocksdb://", datadir=tmp_path)
    return app.Table("state", partitions=PARTITIONS, key_type=bytes, value_type=bytes)


def _changelog(bootstrap: str, table: Any) -> str:
    topic: str = table.changelog_topic.get_topic_name()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    return topic


def _send(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes | None]]) -> None:
    p = Producer(producer_config(bootstrap))
    for partition, key, value in records:
        p.produce(topic, key=key, value=value, partition=partition)
    assert p.flush(30) == 0


def _contents(table: Any, partition: int) -> dict[bytes, bytes]:
    db = partition_db(table, partition)
    return {k: v for k, v in db.items() if k != OFFSET_KEY}


def test_restore_applies_puts_and_tombstones_and_sets_fausts_offset(
    bootstrap: str, tmp_path: Path
) -> None:
    table = _table(tmp_path)
    topic = _changelog(bootstrap, table)
    _send(
        bootstrap,
        topic,
        [
            (1, b"k1", b"v1"),
            (1, b"k2", b"v2"),
            (1, b"k1", b"v1b"),  # a later version wins
            (1, b"k3", b"v3"),
            (1, b"k2", None),  # a tombstone deletes
            (3, b"other", b"x"),
        ],
    )

    done = restore_tables(bootstrap, [table], PARTITIONS)

    by_partition = {r.partition: r for r in done}
    assert by_partition[1].records == 5 and by_partition[3].records == 1
    assert by_partition[0].records == 0 and by_partition[2].records == 0
    assert _contents(table, 1) == {b"k1": b"v1b", b"k3": b"v3"}
    assert _contents(table, 3) == {b"other": b"x"}
    assert _contents(table, 0) == {}
    # Faust's own recovery starts after these offsets: nothing left to read.
    assert table.data.persisted_offset(TP(topic, 1)) == 4
    assert table.data.persisted_offset(TP(topic, 3)) == 0
    assert table.data.persisted_offset(TP(topic, 0)) is None


def test_restore_again_reads_only_what_is_new(bootstrap: str, tmp_path: Path) -> None:
    table = _table(tmp_path)
    topic = _changelog(bootstrap, table)
    _send(bootstrap, topic, [(2, f"k{i}".encode(), b"old") for i in range(25_000)])
    first = {r.partition: r.records for r in restore_tables(bootstrap, [table], PARTITIONS)}
    assert first[2] == 25_000  # more than one write batch

    _send(bootstrap, topic, [(2, b"k7", b"new"), (2, b"k8", None)])
    second = {r.partition: r.records for r in restore_tables(bootstrap, [table], PARTITIONS)}

    assert second[2] == 2
    got = _contents(table, 2)
    assert len(got) == 24_999 and got[b"k7"] == b"new" and b"k8" not in got
    assert table.data.persisted_offset(TP(topic, 2)) == 25_001


def test_restore_skips_tables_without_a_changelog_topic(bootstrap: str, tmp_path: Path) -> None:
    table = _table(tmp_path)  # its changelog topic is never created
    assert restore_tables(bootstrap, [table], PARTITIONS) == []


def test_a_database_beyond_its_changelog_is_deleted_and_restored_from_the_start(
    bootstrap: str, tmp_path: Path
) -> None:
    # A database from a recreated topic (or another cluster): its offset key claims records
    # the changelog does not have, and it holds a key the changelog deleted long ago.
    table = _table(tmp_path)
    topic = _changelog(bootstrap, table)
    _send(bootstrap, topic, [(1, b"k1", b"v1"), (1, b"k2", b"v2")])
    path = table.data.partition_path(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = table.data.rocksdb_options.open(path)
    db.put(b"purged", b"personal data")
    db.put(OFFSET_KEY, b"40")
    db.close()
    tabledir = path.parent

    done = {
        r.partition: r for r in restore_tables(bootstrap, [table], PARTITIONS, tabledir=tabledir)
    }

    assert done[1].records == 2 and done[1].start == 0
    assert _contents(table, 1) == {b"k1": b"v1", b"k2": b"v2"}
    assert table.data.persisted_offset(TP(topic, 1)) == 1
    # Every partition it restored is recorded as in sync now, so the next start keeps them.
    synced = load_synced(tabledir)
    assert sorted(synced) == sorted(table.data.partition_path(p).name for p in range(PARTITIONS))
    assert wipe_unsynced(tabledir) == 0
