"""Faust's RocksDB table store: where purchase-stream relies on its internals.

The companion of :mod:`stream.engine.patches` (the consumer, producer and web server), with
the same rules: faust-streaming is pinned exactly, every function here has a test in
tests/unit/test_patches.py that fails when an upgrade changes what it relies on, and nothing
outside these two modules touches a library's ``_private`` names (ruff SLF001).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from stream.engine.patches import ORIGINALS

log = logging.getLogger(__name__)


# -- faust: a table's per-partition RocksDB databases ----------------------------------------


def partition_db(table: Any, partition: int) -> Any:
    """The rocksdict database of one partition of a ``rocksdb://`` Faust table (opened if not).

    Faust's public table API (``table[key]``) reads and writes the partition of the *current
    event*, keeps an unbounded in-memory index of every key, and sends the changelog through
    its per-record producer path (the largest single cost of the worker in a py-spy profile,
    benchmarks/results/2026-12-07-diary.md, section 2). stream/engine/state.py's TableState writes a
    named partition directly and sends the changelog itself, so a batch that mixes partitions stays
    correct. The Store has no public per-partition accessor; ``Store._db_for_partition`` is the one
    Faust's own get/set use. Looked up on every use: Faust closes and reopens databases on
    rebalance.
    """
    return table.data._db_for_partition(partition)


def open_partition_dbs(table: Any) -> dict[int, Any]:
    """The partition databases a Faust ``rocksdb://`` table has open now (a copy).

    For what this worker holds: RocksDB's key estimates (metrics) and which databases not
    to wipe (stream/engine/restore.py). Faust keeps them in ``Store._dbs`` and has no public
    view of them; opening them through :func:`partition_db` would create databases for
    partitions the worker does not hold. Empty for a store that is not RocksDB.
    """
    return dict(getattr(table.data, "_dbs", {}))


# -- faust: the table stores' RocksDB write-ahead log ----------------------------------------

# Failed flushes below ("table[partition]: error"): a stop with one is not clean (worker.py).
STATE_FLUSH_FAILURES: list[str] = []

# What a failed flush at a revocation does (the worker: agents.fatal_exit): the process may
# own the partition again and would read a database that lost writes.
_ON_REVOKE_FLUSH_FAILURE: list[Callable[[str], object]] = []
# Run at the start of every ``Store.stop``, before its databases are flushed (the worker:
# ``Output.settle``). Faust stops its tables before its last producer flush, so the changelog
# offsets delivered since the last commit -- a tick's sweep writes in a quiet minute -- would
# otherwise be in a database but not in its offset key (the chaos suite's state check found
# it: docs/reliability.md, finding 9).
BEFORE_STOP: list[Callable[[], object]] = []


def _flush_db(store: Any, partition: int, db: Any) -> bool:
    try:
        db.flush()
        return True
    except Exception as exc:  # noqa: BLE001 - recorded, and the stop is then not clean
        STATE_FLUSH_FAILURES.append(f"{store.table.name}[{partition}]: {exc}")
        log.error("flushing %s[%d] failed: %s", store.table.name, partition, exc)
        return False


def table_stores_without_wal(on_revoke_failure: Callable[[str], object] | None = None) -> None:
    """Open Faust's ``rocksdb://`` partition databases without RocksDB's write-ahead log, and
    flush their memtables whenever Faust lets go of them (revocation, stop).

    The worker trusts local state only after a clean stop (``worker.py``,
    ``discard_state_unless_stopped_cleanly``): after a crash every database is restored from
    the changelogs, which are the durability, so the WAL bought nothing but a ``write()`` per
    ``put`` (benchmarks/results/2026-12-07-no-wal.md). Without it, Faust's store must flush
    before it drops a database: ``Store.stop`` and ``Store.revoke_partitions`` pop them from
    ``Store._dbs`` *without closing them* (0.15.3 has the ``db.close()`` commented out), and
    the destructor's flush runs only if the object is collected before the process ends.
    Each database is flushed first (``Rdict.flush()`` waits); a failed flush is recorded in
    :data:`STATE_FLUSH_FAILURES` (the stop is then not clean) and at a revocation calls
    ``on_revoke_failure`` (the worker stops without committing). Faust has no option for
    write options; ``RocksDBOptions.open`` is also what the bulk restore opens with.

    Relies on (tests/unit/test_patches.py): ``RocksDBOptions.open(path, *, read_only)``
    returns the rocksdict ``Rdict``, ``Store.stop`` and ``Store.revoke_partitions(table,
    tps)`` pop databases from ``Store._dbs`` without closing them, and ``Store.table``.
    """
    from faust.stores.rocksdb import RocksDBOptions, Store
    from rocksdict import WriteOptions

    _ON_REVOKE_FLUSH_FAILURE[:] = [on_revoke_failure] if on_revoke_failure else []
    if getattr(Store, "_ps_no_wal", False):
        return
    ORIGINALS["RocksDBOptions.open"] = open_ = RocksDBOptions.open
    ORIGINALS["Store.stop"] = stop = Store.stop
    ORIGINALS["Store.revoke_partitions"] = revoke = Store.revoke_partitions

    def open_no_wal(self: Any, path: Any, *, read_only: bool = False) -> Any:
        db = open_(self, path, read_only=read_only)
        if not read_only:
            options = WriteOptions()
            # rocksdict 0.3 stubs it as a method; at run time it is a property (the tests check).
            options.disable_wal = True  # type: ignore[method-assign,assignment]
            db.set_write_options(options)
        return db

    async def stop_flushed(self: Any) -> None:
        for hook in BEFORE_STOP:
            hook()
        for partition, db in list(self._dbs.items()):
            _flush_db(self, partition, db)
        await stop(self)

    def revoke_flushed(self: Any, table: Any, tps: Any) -> None:
        for tp in tps:
            if tp.topic in table.changelog_topic.topics:
                db = self._dbs.get(tp.partition)
                if db is not None and not _flush_db(self, tp.partition, db):
                    for on_failure in _ON_REVOKE_FLUSH_FAILURE:
                        on_failure(f"table state of {table.name}[{tp.partition}] not flushed")
        revoke(self, table, tps)

    RocksDBOptions.open = open_no_wal  # type: ignore[method-assign]
    Store.stop = stop_flushed  # type: ignore[method-assign]
    Store.revoke_partitions = revoke_flushed  # type: ignore[method-assign]
    Store._ps_no_wal = True  # type: ignore[attr-defined]
