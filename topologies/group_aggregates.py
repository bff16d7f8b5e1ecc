"""Stage 3, keyed by store id: anonymous store x day x product-group aggregates.

Input: ``aggregates.contributions`` (per-receipt product-group sums from stage 1, no person
identifiers). Business development analyses these, never per person (docs/domain.md §3.5).

State: ``agg|<store>|<date>`` -> the day's totals per product group; ``seen|<receipt>`` ->
processing time, and ``seenx|<day bucket>|<receipt>``, a time index that lets the sweep
drop dedupe marks older than ``rules.aggregate_dedupe_window_ms`` without a full scan.

Exactly once per receipt, also across a crash and a restore from the changelog on another
host. The aggregate is written before the dedupe mark, on the same changelog partition, by an
idempotent producer: the broker holds a *prefix* of the stage's writes, so a surviving mark
implies a surviving aggregate, and the only write that can survive without its mark is the
very last one the broker got. The aggregate therefore carries the id of the last receipt it
counted (``last``): a receipt with no mark whose id is its aggregate's ``last`` was counted
already; the mark is written and nothing is added.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, cast

from topologies.context import Context
from topologies.record_types import Contribution, GroupAggregate, GroupTotal
from topologies.records import Emit, Reject, StepResult
from topologies.rules import DAY_MS
from topologies.state import State

STAGE = "group_aggregates"
INPUTS = ("aggregates.contributions",)
SWEEP_KEY = "meta|seen_sweep_at"


class Aggregate(TypedDict):
    """A store-day as stored (``agg|``): groups by name, and the last receipt counted."""

    store_id: str
    date: str
    chain: str
    receipt_count: int
    total_cents: int
    groups: dict[str, GroupTotal]
    last: NotRequired[str]


def agg_key(store_id: str, date: str) -> str:
    """State key of a store's day."""
    return f"agg|{store_id}|{date}"


def step(
    ctx: Context, state: State, topic: str, key: str | None, value: dict[str, Any] | None
) -> StepResult:
    """Add one receipt's contribution to its store-day, once."""
    return _on_contribution(ctx, state, cast("Contribution | None", value))


def _on_contribution(ctx: Context, state: State, value: Contribution | None) -> StepResult:
    result = StepResult()
    if value is None:
        result.rejects.append(Reject("missing_value", "aggregates.contributions needs a value"))
        return result
    rid = value["receipt_id"]
    akey = agg_key(value["store_id"], value["date"])
    if state.get(f"seen|{rid}") is not None:
        result.events["duplicate"] += 1
        current: Aggregate | None = state.get(akey)
        if current is not None:  # re-send in case the first emit was lost in a crash
            result.emits.append(_emit(current))
        return result
    held: Aggregate | None = state.get(akey)
    if held is not None and held.get("last") == rid:
        # Counted, but its mark was lost (crash between the two changelog writes).
        _mark(ctx, state, rid)
        result.events["duplicate"] += 1
        result.emits.append(_emit(held))
        return result
    agg: Aggregate = held or {
        "store_id": value["store_id"],
        "date": value["date"],
        "chain": value["chain"],
        "receipt_count": 0,
        "total_cents": 0,
        "groups": {},
    }
    agg["receipt_count"] += 1
    agg["last"] = rid
    agg["total_cents"] += value["total_cents"]
    groups = agg["groups"]
    for g in value["groups"]:
        cur = groups.get(g["product_group"])
        if cur is None:
            groups[g["product_group"]] = GroupTotal(**g)
        else:
            cur["amount_cents"] += g["amount_cents"]
            cur["quantity_milli"] += g["quantity_milli"]
            cur["line_count"] += g["line_count"]
    state.set(akey, agg)
    _mark(ctx, state, rid)
    result.emits.append(_emit(agg))
    result.events["aggregated"] += 1
    _maybe_sweep(ctx, state, result)
    return result


def _mark(ctx: Context, state: State, rid: str) -> None:
    # The expiry index before the mark: a surviving mark implies its index entry (else a
    # crash between the two would leave a mark that never expires).
    state.set(f"seenx|{ctx.now_ms // DAY_MS:08d}|{rid}", 1)
    state.set(f"seen|{rid}", ctx.now_ms)


def _emit(agg: Aggregate) -> Emit:
    record: GroupAggregate = {
        "store_id": agg["store_id"],
        "date": agg["date"],
        "chain": agg["chain"],
        "receipt_count": agg["receipt_count"],
        "total_cents": agg["total_cents"],
        "groups": [agg["groups"][k] for k in sorted(agg["groups"])],
    }
    return Emit("aggregates.group", f"{agg['store_id']}|{agg['date']}", record)


def _maybe_sweep(ctx: Context, state: State, result: StepResult) -> None:
    due = state.get(SWEEP_KEY)
    if due is not None and ctx.now_ms < due:
        return
    state.set(SWEEP_KEY, ctx.now_ms + ctx.rules.park_sweep_interval_ms)
    cutoff_bucket = (ctx.now_ms - ctx.rules.aggregate_dedupe_window_ms) // DAY_MS
    for xkey, _ in list(state.items("seenx|")):
        bucket = int(xkey.split("|", 2)[1])
        if bucket >= cutoff_bucket:
            break  # keys are in bucket order: the rest are younger
        state.delete(xkey)
        state.delete(f"seen|{xkey.split('|', 2)[2]}")
        result.events["dedupe_expired"] += 1


def tick(ctx: Context, state: State) -> StepResult:
    """Sweep now, whatever the schedule (the clock moved without a record)."""
    result = StepResult()
    state.delete(SWEEP_KEY)
    _maybe_sweep(ctx, state, result)
    return result
