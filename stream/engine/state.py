"""State adapters behind topologies.state.State: RocksDB (rocksdict) for replay, Faust tables for
the worker. Values are JSON (orjson) so a state directory is readable by ``extract``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from rocksdict import AccessType, Options, Rdict, WriteOptions

from stream.engine.store_patches import partition_db


def rocks_options(block_cache_bytes: int = 16 * 1024 * 1024) -> Options:
    from rocksdict import BlockBasedOptions, Cache

    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(block_cache_bytes))
    table.set_bloom_filter(10, True)
    opts.set_block_based_table_factory(table)
    return opts


def no_wal() -> WriteOptions:
    """Write options without RocksDB's write-ahead log (the caller flushes before it lets go)."""
    options = WriteOptions()
    # rocksdict 0.3 stubs it as a method; at run time it is a property (the tests check).
    options.disable_wal = True  # type: ignore[method-assign,assignment]
    return options


def _prefix_items(db: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    raw = prefix.encode()
    for k, v in db.items(from_key=raw):
        if not k.startswith(raw):
            break
        yield k.decode(), orjson.loads(v)


class RocksState:
    """One rocksdict database (raw mode, JSON values), e.g. one per stage in a replay state dir.

    ``read_only=True`` is for readers (``bonus``, ``extract``): RocksDB's read-only mode takes
    no lock, so any number of them run side by side, and beside a writer (they see the
    database as it was when they opened it, up to the writer's last memtable flush: the
    writer writes without WAL, so what is only in its memtables is not on disk yet). A writer
    holds the directory's ``LOCK``, so a second writer fails with ``IO error: While lock
    file``. Writes on a read-only state raise.
    """

    def __init__(
        self,
        path: str | Path,
        block_cache_bytes: int = 16 * 1024 * 1024,
        *,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            self.db = Rdict(
                str(path),
                options=rocks_options(block_cache_bytes),
                access_type=AccessType.read_only(),
            )
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self.db = Rdict(str(path), options=rocks_options(block_cache_bytes))
            # No write-ahead log: a replay killed part-way has no resumable position anyway
            # (its input is replayed again into a fresh state dir), so the WAL bought nothing
            # but a sequential write per put. close() flushes the memtables.
            self.db.set_write_options(no_wal())

    def get(self, key: str) -> Any | None:
        v = self.db.get(key.encode())
        return None if v is None else orjson.loads(v)

    def set(self, key: str, value: Any) -> None:
        self.db.put(key.encode(), orjson.dumps(value))

    def delete(self, key: str) -> None:
        self.db.delete(key.encode())

    def items(self, prefix: str) -> Iterator[tuple[str, Any]]:
        # Materialise: callers may delete while iterating.
        return iter(list(_prefix_items(self.db, prefix)))

    def close(self) -> None:
        if not self.read_only:
            # Written without WAL: what is only in the memtables is lost unless flushed.
            self.db.flush()
        self.db.close()


class TableState:
    """One partition of a Faust ``rocksdb://`` table (raw key/value serializers).

    Writes go to the partition's rocksdict database *and* to the table's changelog with an
    explicit partition number, which is what Faust's own ``table[key] = value`` does for the
    current event, but without depending on the "current event" (so batches that mix
    partitions stay correct) and without Faust's unbounded in-memory key index. The worker
    passes ``changelog`` (stream/engine/output.py's producer); without it, Faust's send path.
    """

    def __init__(
        self,
        table: Any,
        partition: int,
        changelog: Callable[[int, bytes, bytes | None], Any] | None = None,
    ) -> None:
        self.table = table
        self.partition = partition
        # (partition, key, value) -> changelog record; the worker's is stream.engine.output's
        # producer, Faust's own send path otherwise.
        self._changelog = changelog or table.send_changelog

    @property
    def db(self) -> Any:
        # Looked up on every use: Faust closes and reopens partition databases on rebalance.
        return partition_db(self.table, self.partition)

    def get(self, key: str) -> Any | None:
        v = self.db.get(key.encode())
        return None if v is None else orjson.loads(v)

    def set(self, key: str, value: Any) -> None:
        k, v = key.encode(), orjson.dumps(value)
        self.db.put(k, v)
        self._changelog(self.partition, k, v)

    def delete(self, key: str) -> None:
        k = key.encode()
        self.db.delete(k)
        self._changelog(self.partition, k, None)

    def items(self, prefix: str) -> Iterator[tuple[str, Any]]:
        return iter(list(_prefix_items(self.db, prefix)))


class CachedCatalog:
    """GTIN -> product lookups with an in-process cache in front of the catalogue state.

    Every line item needs its product; a RocksDB get + JSON decode per line was the largest
    cost in the replay profile. The cache is invalidated per GTIN whenever a catalogue record
    is applied here (stream/engine/catalog_feed.py applies every catalogue record), so a new
    catalogue entry takes effect as soon as this process has it (never rewriting history).
    """

    MAX_ENTRIES = 500_000  # the whole catalogue of a national co-op fits; cleared beyond

    def __init__(self, state: Any, key: Any) -> None:
        self._state = state
        self._key = key
        self._cache: dict[str, Any] = {}

    def __call__(self, gtin: str) -> Any | None:
        try:
            return self._cache[gtin]
        except KeyError:
            pass
        value = self._state.get(self._key(gtin))
        if len(self._cache) >= self.MAX_ENTRIES:
            self._cache.clear()
        self._cache[gtin] = value
        return value

    def invalidate(self, gtin: str) -> None:
        self._cache.pop(gtin, None)
