"""State behind a small interface: get / set / delete / items-by-prefix.

Topologies only see :class:`State`. Implementations: :class:`MemoryState` here (tests),
``stream.engine.state.RocksState`` (rocksdict, used by ``replay``) and
``stream.engine.state.TableState``
(a Faust ``rocksdb://`` table partition, used by the worker). All run the same tests.

Keys are ``|``-separated strings whose first segment names the store, e.g.
``pl|<customer>|<receipt>``; values are JSON-compatible dicts. Prefix iteration is in key
order, which is what makes per-person purges and per-card parking cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class State(Protocol):
    """A stage's key-value state."""

    def get(self, key: str) -> Any | None:
        """The value under ``key``; None if there is none."""
        ...

    def set(self, key: str, value: Any) -> None:
        """Write ``value`` under ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Delete ``key`` (no error if it is not there)."""
        ...

    def items(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` of every key that starts with ``prefix``, in key order."""
        ...


class MemoryState:
    """Dict-backed state; iteration copies matching keys so callers may delete while iterating."""

    def __init__(self) -> None:
        """An empty state."""
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any | None:
        """See :meth:`State.get`."""
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        """See :meth:`State.set`."""
        self.data[key] = value

    def delete(self, key: str) -> None:
        """See :meth:`State.delete`."""
        self.data.pop(key, None)

    def items(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """See :meth:`State.items`."""
        for key in sorted(k for k in self.data if k.startswith(prefix)):
            yield key, self.data[key]


_DELETED = object()


class StagedState:
    """Writes of one record held back until the record's outputs are known to be sendable.

    The runner (stream/engine/runner.py) wraps a stage's state in this for each record: reads see
    the record's own writes, and :meth:`commit` applies them to the real state -- which in
    the worker also sends them to the changelog -- only after every output was encoded and
    found within the size limit. If an output cannot be sent, :meth:`discard` drops the
    writes and the record is dead-lettered: the state never holds the effect of a record
    whose outputs were not produced (a receipt counted whose totals never left).

    Writes are applied in the order of their *last* write, so "X written before Y" in a step
    still means "X before Y" on the changelog (the dedupe marks rely on it).
    """

    __slots__ = ("inner", "_writes")

    def __init__(self, inner: State) -> None:
        """Stage the writes to ``inner``."""
        self.inner = inner
        self._writes: dict[str, Any] = {}

    def get(self, key: str) -> Any | None:
        """See :meth:`State.get`."""
        w = self._writes.get(key, None)
        if w is None and key not in self._writes:
            return self.inner.get(key)
        return None if w is _DELETED else w

    def set(self, key: str, value: Any) -> None:
        """See :meth:`State.set`."""
        self._writes.pop(key, None)
        self._writes[key] = value

    def delete(self, key: str) -> None:
        """See :meth:`State.delete`."""
        self._writes.pop(key, None)
        self._writes[key] = _DELETED

    def items(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """See :meth:`State.items`."""
        staged = {k: v for k, v in self._writes.items() if k.startswith(prefix)}
        if not staged:
            return self.inner.items(prefix)
        merged = {k: v for k, v in self.inner.items(prefix) if k not in staged}
        merged.update((k, v) for k, v in staged.items() if v is not _DELETED)
        return iter(sorted(merged.items()))

    def commit(self) -> int:
        """Apply the staged writes to the real state; how many there were."""
        writes, self._writes = self._writes, {}
        inner = self.inner
        for key, value in writes.items():
            if value is _DELETED:
                inner.delete(key)
            else:
                inner.set(key, value)
        return len(writes)

    def discard(self) -> None:
        """Drop the staged writes."""
        self._writes = {}
