"""Retention of the personal stores (docs/domain.md §7): the expiry index and the purge.

Every routed receipt gets an ``exp|<Helsinki date>|<customer>|<receipt>`` index entry; the
purge (every ``retention.sweep_interval_minutes``, on the processing clock) reads only the
index of the dates that became due since the last one, so its work is bounded by what expires.
"""

from __future__ import annotations

from datetime import date, timedelta

from topologies import counters
from topologies.context import Context
from topologies.personal_stores import (
    COUNTERS_TOPIC,
    GATED,
    RETAINED,
    audit,
    counter_key,
    expiry_key,
    output_key,
    store_key,
)
from topologies.records import Emit, StepResult
from topologies.state import State

RETENTION_DONE_KEY = "meta|retention_done"  # {store: every record before this date purged}
RETENTION_SWEEP_KEY = "meta|retention_sweep_at"
EXPIRY_LOW_KEY = "meta|expiry_low"  # earliest date with an ``exp|`` index entry


def index_for_expiry(state: State, date: str, cid: str, rid: str) -> None:
    """Index a routed receipt by its Helsinki purchase date, for the retention purge."""
    state.set(expiry_key(date, cid, rid), 1)
    low = state.get(EXPIRY_LOW_KEY)
    if low is None or date < low:
        state.set(EXPIRY_LOW_KEY, date)


def purge_expired(ctx: Context, state: State, result: StepResult) -> dict[str, int]:
    """Delete every record older than its store's retention (docs/domain.md §7).

    Retention goes by Helsinki purchase date; each record deleted from a store with a
    compacted output topic gets a tombstone there.

    The work is bounded by what expires: each receipt has an ``exp|<date>|...`` index entry,
    and each store remembers up to which date it has been purged (``meta|retention_done``),
    so a sweep reads only the index of the dates that became due since the last one. Counters
    go by whole months (a month wholly before the cutoff). The receipt total (the dedupe
    mark) has the purchase-data period: a redelivery two years late cannot occur (the input
    topics keep days).
    """
    rules = ctx.rules
    low = state.get(EXPIRY_LOW_KEY)
    done: dict[str, str] = dict(state.get(RETENTION_DONE_KEY) or {})
    counts: dict[str, int] = {}
    cutoffs = {
        store: rules.local_date(ctx.now_ms - rules.keep_ms(store))
        for store in (*RETAINED.values(), "counters", "recall_index")
    }
    cutoffs["counters"] = cutoffs["counters"][:8] + "01"  # whole months only
    for store, cutoff in cutoffs.items():
        start = done.get(store) or low
        n = 0
        if start is not None:
            for day in _dates(start, cutoff):
                n += _purge_day(ctx, state, store, day, result)
        counts[store] = n
        if start is not None and (done.get(store) or "") < cutoff:
            done[store] = cutoff
    # Index entries no store needs any more (every store purged past their date).
    index_done = min(done.get(store, "") for store in (*RETAINED.values(), "counters"))
    if low is not None and index_done > low:
        for day in _dates(low, index_done):
            for skey, _ in list(state.items(f"exp|{day}|")):
                state.delete(skey)
        state.set(EXPIRY_LOW_KEY, index_done)
    if done:
        state.set(RETENTION_DONE_KEY, done)
    deleted = sum(counts.values())
    result.events["retention_deleted"] += deleted
    if deleted:
        result.emits.append(audit(ctx, "retention_purge", None, "retention", counts))
    return counts


def _purge_day(ctx: Context, state: State, store: str, day: str, result: StepResult) -> int:
    n = 0
    if store == "recall_index":
        for skey, _ in list(state.items(f"rc|{day}|")):
            state.delete(skey)
            n += 1
        return n
    for skey, _ in list(state.items(f"exp|{day}|")):
        _, _, cid, rid = skey.split("|", 3)
        if store == "counters":
            n += _purge_counter_month(ctx, state, cid, day[:7], result)
            continue
        prefix = next(p for p, s in RETAINED.items() if s == store)
        if state.get(store_key(prefix, cid, rid)) is None:
            continue
        state.delete(store_key(prefix, cid, rid))
        if prefix in GATED:
            result.emits.append(Emit(GATED[prefix][0], output_key(cid, rid), None))
        n += 1
    return n


def _purge_counter_month(
    ctx: Context, state: State, cid: str, month: str, result: StepResult
) -> int:
    """A month's counters wholly outside retention: deleted, with a removal record."""
    if state.get(counter_key(cid, month)) is None:
        return 0  # another receipt of the month already removed it
    state.delete(counter_key(cid, month))
    result.emits.append(Emit(COUNTERS_TOPIC, cid, counters.removal_record(cid, month, ctx.now_ms)))
    return 1


def _dates(start: str, end: str) -> list[str]:
    """Dates from ``start`` (inclusive) to ``end`` (exclusive), YYYY-MM-DD."""
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days)]
