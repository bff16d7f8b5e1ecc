"""One contract, every State implementation: memory, RocksDB (replay) and Faust-table partition."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from rocksdict import Rdict

from stream.engine.state import CachedCatalog, RocksState, TableState, rocks_options
from topologies.state import MemoryState


class _Store:
    """The two members of faust.stores.rocksdb.Store that TableState uses."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dbs: dict[int, Rdict] = {}

    def _db_for_partition(self, partition: int) -> Rdict:
        if partition not in self.dbs:
            self.dbs[partition] = Rdict(str(self.root / str(partition)), options=rocks_options())
        return self.dbs[partition]


class _Table:
    def __init__(self, root: Path) -> None:
        self.data = _Store(root)
        self.changelog: list[tuple[int, bytes, bytes | None]] = []

    def send_changelog(self, partition: int, key: bytes, value: bytes | None) -> None:
        self.changelog.append((partition, key, value))


@pytest.fixture(params=["memory", "rocks", "table"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryState()
    elif request.param == "rocks":
        s = RocksState(tmp_path / "rocks")
        yield s
        s.close()
    else:
        yield TableState(_Table(tmp_path), partition=2)


def test_get_set_delete(state: Any) -> None:
    assert state.get("a|1") is None
    state.set("a|1", {"x": 1, "nested": [1, 2]})
    assert state.get("a|1") == {"x": 1, "nested": [1, 2]}
    state.set("a|1", {"x": 2})
    assert state.get("a|1") == {"x": 2}
    state.delete("a|1")
    assert state.get("a|1") is None
    state.delete("never-there")  # deleting a missing key is not an error


def test_items_by_prefix_in_key_order_and_exact_segment(state: Any) -> None:
    for key in ("pl|c1|r2", "pl|c1|r1", "pl|c10|r1", "pm|c1", "pl|c2|r1"):
        state.set(key, key)
    assert [k for k, _ in state.items("pl|c1|")] == ["pl|c1|r1", "pl|c1|r2"]
    assert [v for _, v in state.items("pl|c1|")] == ["pl|c1|r1", "pl|c1|r2"]
    # Byte order, as RocksDB keeps it ("0" sorts before "|").
    assert [k for k, _ in state.items("pl|")] == ["pl|c10|r1", "pl|c1|r1", "pl|c1|r2", "pl|c2|r1"]
    assert list(state.items("zz|")) == []


def test_delete_while_iterating(state: Any) -> None:
    for i in range(5):
        state.set(f"park|card|{i}", i)
    for key, _ in state.items("park|card|"):
        state.delete(key)
    assert list(state.items("park|")) == []


def test_table_state_writes_changelog_on_its_partition(tmp_path: Path) -> None:
    table = _Table(tmp_path)
    s = TableState(table, partition=3)
    s.set("k", {"v": 1})
    s.delete("k")
    assert table.changelog == [(3, b"k", orjson.dumps({"v": 1})), (3, b"k", None)]
    assert set(table.data.dbs) == {3}


def test_rocks_state_survives_reopen(tmp_path: Path) -> None:
    s = RocksState(tmp_path / "db")
    s.set("consent|c1", {"version": 3})
    s.close()
    s = RocksState(tmp_path / "db")
    assert s.get("consent|c1") == {"version": 3}
    s.close()


def test_cached_catalog_serves_from_cache_until_invalidated() -> None:
    backing = MemoryState()
    reads: list[str] = []

    class Counting:
        def get(self, key: str) -> Any:
            reads.append(key)
            return backing.get(key)

    cat = CachedCatalog(Counting(), lambda g: f"product|{g}")
    assert cat("640") is None  # unknown GTIN is cached too ...
    backing.set("product|640", {"product_group": "DAIRY"})
    assert cat("640") is None
    cat.invalidate("640")  # ... until a catalogue record for it is applied
    assert cat("640") == {"product_group": "DAIRY"}
    assert cat("640") == {"product_group": "DAIRY"}
    assert reads == ["product|640", "product|640"]


def test_rocks_state_writes_without_wal_and_close_flushes(tmp_path: Path) -> None:
    import subprocess
    import sys

    child = (
        "import os, sys\n"
        "from stream.engine.state import RocksState\n"
        "s = RocksState(sys.argv[1])\n"
        "s.set('a', 1)\n"
        "if sys.argv[2] == 'close':\n"
        "    s.close()\n"
        "os._exit(0)\n"
    )
    for mode, expected in (("kill", None), ("close", 1)):
        path = tmp_path / mode
        subprocess.run([sys.executable, "-c", child, str(path), mode], check=True, timeout=60)
        s = RocksState(path)
        assert s.get("a") == expected, mode  # no WAL: only a flush (close) keeps the write
        s.close()
