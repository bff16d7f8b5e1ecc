"""State behind a small interface: get / set / delete / items-by-prefix.

Topologies only see :class:`State`. Implementations: :class:`MemoryState` here (tests),
``stream.state.RocksState`` (rocksdict, used by ``replay``) and ``stream.state.TableState``
(a Faust ``rocksdb://`` table partition, used by the worker). All run the same tests.

Keys are ``|``-separated strings whose first segment names the store, e.g.
``pl|<customer>|<receipt>``; values are JSON-compatible dicts. Prefix iteration is in key
order, which is what makes per-person purges and per-card parking cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class State(Protocol):
    def get(self, key: str) -> Any | None: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...

    def items(self, prefix: str) -> Iterator[tuple[str, Any]]: ...


class MemoryState:
    """Dict-backed state; iteration copies matching keys so callers may delete while iterating."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any | None:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def items(self, prefix: str) -> Iterator[tuple[str, Any]]:
        for key in sorted(k for k in self.data if k.startswith(prefix)):
            yield key, self.data[key]
