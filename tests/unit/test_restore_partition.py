"""stream/engine/restore.py without a broker: a scripted consumer feeds restore_partition what a
broker can deliver but the embedded one cannot be made to (compacted gaps, a tail removed
by compaction, transient and fatal errors, a high watermark that moves), and the synced-at
sidecar that keeps a stale database from being resumed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError
from rocksdict import Rdict

from stream.engine import restore
from stream.engine.patches import ALL_BROKERS_DOWN, PARTITION_EOF, TRANSPORT
from stream.engine.restore import (
    OFFSET_KEY,
    SYNCED_FILE,
    StaleDatabase,
    load_synced,
    mark_synced,
    persisted_offset,
    restore_partition,
    wipe_unsynced,
)
from stream.engine.state import rocks_options

TOPIC = "app-state-changelog"


class Msg:
    def __init__(
        self,
        offset: int,
        key: bytes | None = None,
        value: bytes | None = None,
        error: KafkaError | None = None,
        topic: str = TOPIC,
        partition: int = 0,
    ) -> None:
        self._o, self._k, self._v, self._e = offset, key, value, error
        self._t, self._p = topic, partition

    def error(self) -> KafkaError | None:
        return self._e

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p


def eof(offset: int) -> Msg:
    return Msg(offset, error=KafkaError(PARTITION_EOF))


class ScriptedConsumer:
    """Delivers ``script`` (lists of messages, one per consume() call) from the assigned
    offset on; records what was assigned."""

    def __init__(self, low: int, high: int, script: list[list[Msg]]) -> None:
        self.low, self.high, self.script = low, high, list(script)
        self.assigned: list[int] = []
        self.unassigned = 0

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return self.low, self.high

    def assign(self, tps: list[Any]) -> None:
        self.assigned.append(tps[0].offset)
        start = tps[0].offset
        self.script = [[m for m in b if m.error() or m.offset() >= start] for b in self.script]

    def consume(self, n: int, timeout: float) -> list[Msg]:
        if not self.script:
            raise AssertionError("consume() called after the script ended: no exit")
        return self.script.pop(0)

    def unassign(self) -> None:
        self.unassigned += 1


@pytest.fixture
def db(tmp_path: Path) -> Any:
    d = Rdict(str(tmp_path / "p0.db"), options=rocks_options())
    yield d
    d.close()


def contents(db: Any) -> dict[bytes, bytes]:
    return {k: v for k, v in db.items() if k != OFFSET_KEY}


def test_gaps_a_compacted_tail_and_keyless_records_end_at_the_high_watermark(db: Any) -> None:
    # Offsets 2-3 were compacted away, 6 is keyless, 7-9 (the tail) were compacted too:
    # the broker ends the partition with an EOF at the high watermark.
    c = ScriptedConsumer(
        0,
        10,
        [
            [Msg(0, b"a", b"1"), Msg(1, b"b", b"1"), Msg(4, b"a", b"2")],
            [Msg(5, b"b", None), Msg(6, None, b"x"), eof(10)],
        ],
    )
    r = restore_partition(c, TOPIC, 0, db, timeout_s=5)
    assert contents(db) == {b"a": b"2"}
    assert persisted_offset(db) == 9  # Faust's recovery starts at 10
    assert r.records == 4 and (r.start, r.end) == (0, 10)
    assert c.unassigned == 1


def test_an_eof_below_the_high_watermark_is_not_the_end(db: Any) -> None:
    c = ScriptedConsumer(0, 3, [[Msg(0, b"a", b"1"), eof(1)], [], [Msg(2, b"a", b"2"), eof(3)]])
    restore_partition(c, TOPIC, 0, db, timeout_s=5)
    assert contents(db) == {b"a": b"2"} and persisted_offset(db) == 2


def test_records_written_after_the_start_are_left_to_fausts_recovery(db: Any) -> None:
    # The high watermark was 2 when the restore began; offset 2 arrived meanwhile and
    # offset 1 was compacted away, so the first thing at or past the watermark is a record.
    c = ScriptedConsumer(0, 2, [[Msg(0, b"a", b"1"), Msg(2, b"a", b"new"), Msg(3, b"b", b"x")]])
    restore_partition(c, TOPIC, 0, db, timeout_s=5)
    assert contents(db) == {b"a": b"1"}
    assert persisted_offset(db) == 1


def test_a_second_restore_resumes_after_the_offset_the_database_holds(db: Any) -> None:
    restore_partition(
        ScriptedConsumer(0, 2, [[Msg(0, b"a", b"1"), Msg(1, b"b", b"1")]]), TOPIC, 0, db
    )
    c = ScriptedConsumer(0, 4, [[Msg(0, b"a", b"old"), Msg(2, b"b", None), Msg(3, b"c", b"1")]])
    restore_partition(c, TOPIC, 0, db, timeout_s=5)
    assert c.assigned == [2]
    assert contents(db) == {b"a": b"1", b"c": b"1"}
    assert persisted_offset(db) == 3


def test_transient_errors_are_retried(db: Any) -> None:
    c = ScriptedConsumer(
        0,
        2,
        [
            [Msg(-1, error=KafkaError(TRANSPORT))],
            [Msg(0, b"a", b"1"), Msg(-1, error=KafkaError(ALL_BROKERS_DOWN))],
            [Msg(1, b"b", b"1")],
        ],
    )
    restore_partition(c, TOPIC, 0, db, timeout_s=5)
    assert contents(db) == {b"a": b"1", b"b": b"1"}


def test_a_failure_midway_leaves_what_was_written_consistent_and_resumable(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore, "BATCH_RECORDS", 2)
    c = ScriptedConsumer(
        0,
        6,
        [
            [Msg(0, b"a", b"1"), Msg(1, b"b", b"1")],  # a batch of 2: written with offset 1
            [Msg(2, b"c", b"1")],
            [Msg(-1, error=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))],
        ],
    )
    with pytest.raises(RuntimeError, match="TOPIC_AUTHORIZATION_FAILED|Authorization"):
        restore_partition(c, TOPIC, 0, db, timeout_s=5)
    assert persisted_offset(db) == 1
    assert contents(db) == {b"a": b"1", b"b": b"1"}  # offset 2 was not claimed, not written
    c2 = ScriptedConsumer(0, 6, [[Msg(2, b"c", b"1"), Msg(3, b"a", None), eof(6)]])
    restore_partition(c2, TOPIC, 0, db, timeout_s=5)
    assert c2.assigned == [2]
    assert contents(db) == {b"b": b"1", b"c": b"1"} and persisted_offset(db) == 5


def test_a_record_of_another_partition_is_an_error(db: Any) -> None:
    c = ScriptedConsumer(0, 2, [[Msg(0, b"a", b"1", partition=3)]])
    with pytest.raises(RuntimeError, match="another|got a record"):
        restore_partition(c, TOPIC, 0, db, timeout_s=5)
    assert contents(db) == {}


@pytest.mark.parametrize("held,low,high", [(9, 0, 5), (5, 5, 5), (1, 4, 9)])
def test_a_database_that_does_not_fit_its_changelog_is_stale(
    db: Any, held: int, low: int, high: int
) -> None:
    db.put(OFFSET_KEY, str(held).encode())
    with pytest.raises(StaleDatabase):
        restore_partition(ScriptedConsumer(low, high, []), TOPIC, 0, db, timeout_s=5)


def test_a_database_at_the_high_watermark_reads_nothing(db: Any) -> None:
    db.put(OFFSET_KEY, b"4")
    c = ScriptedConsumer(0, 5, [])
    r = restore_partition(c, TOPIC, 0, db, timeout_s=5)
    assert r.records == 0 and c.assigned == []


def _dbdir(tabledir: Path, name: str) -> Path:
    p = tabledir / name
    p.mkdir(parents=True)
    (p / "CURRENT").write_text("x")
    return p


def test_databases_not_synced_within_half_the_tombstone_retention_are_deleted(
    tmp_path: Path,
) -> None:
    hour = 3_600_000
    now = 1_000 * hour
    fresh = _dbdir(tmp_path, "app-a-0.db")
    old = _dbdir(tmp_path, "app-a-1.db")
    unknown = _dbdir(tmp_path, "app-a-2.db")  # never recorded (older code, a lost partition)
    mark_synced(tmp_path, [fresh], now - 11 * hour)
    mark_synced(tmp_path, [old], now - 13 * hour)
    assert restore.MAX_UNSYNCED_MS // hour == 12  # half of delete.retention.ms (24 h)
    assert wipe_unsynced(tmp_path, now_ms=now) == 2
    assert fresh.is_dir() and not old.exists() and not unknown.exists()
    assert load_synced(tmp_path) == {"app-a-0.db": now - 11 * hour}
    assert wipe_unsynced(tmp_path, now_ms=now) == 0


def test_synced_at_only_moves_forward_and_survives_a_torn_file(tmp_path: Path) -> None:
    p = _dbdir(tmp_path, "app-a-0.db")
    mark_synced(tmp_path, [p], 200)
    mark_synced(tmp_path, [p], 100)
    assert load_synced(tmp_path) == {"app-a-0.db": 200}
    (tmp_path / SYNCED_FILE).write_text('{"app-a-0.db": 2')  # torn: treated as unknown
    assert load_synced(tmp_path) == {}
    assert wipe_unsynced(tmp_path, now_ms=300) == 1
    assert json.loads((tmp_path / SYNCED_FILE).read_text()) == {}
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_the_running_worker_keeps_the_databases_faust_has_open(tmp_path: Path) -> None:
    hour = 3_600_000
    owned = _dbdir(tmp_path, "app-a-0.db")
    lost = _dbdir(tmp_path, "app-a-1.db")  # revoked (or restored at start, never assigned)
    mark_synced(tmp_path, [owned, lost], 0)
    assert wipe_unsynced(tmp_path, now_ms=13 * hour, skip=frozenset({"app-a-0.db"})) == 1
    assert owned.is_dir() and not lost.exists()
