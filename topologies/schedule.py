"""Periodic work driven by the processing clock, on a fixed grid.

A stage that sweeps every N minutes keeps the next slot in its state: the work runs when the
clock reaches it, and the next slot is the following multiple of N. The slot is booked
*after* the work, so a crash part-way leaves the work due and the redone tick finishes it
(the sweeps are idempotent), landing on the same slot as the first attempt would have.
"""

from __future__ import annotations

from collections.abc import Callable

from topologies.context import Context
from topologies.state import State


def run_on_grid(
    ctx: Context, state: State, key: str, every_ms: int, work: Callable[[], object]
) -> bool:
    """Run ``work`` if the slot stored under ``key`` is due (or none is); True if it ran."""
    due = state.get(key)
    if due is not None and ctx.now_ms < due:
        return False
    work()
    state.set(key, (ctx.now_ms // every_ms + 1) * every_ms)
    return True
