"""Stage 4, keyed by household id: the household Bonus ledger and its monthly statements.

Input: ``receipts.totals`` (stage 2's receipt-total records, keyed by the household the card
was linked to when the receipt was routed) and ``register.households`` (who is in the
household now, by the card register). Rules: docs/domain.md §4; the arithmetic is in
:mod:`topologies.bonus_rules`, the state layout, tallies and statements in
:mod:`topologies.bonus_ledger`, the month close in :mod:`topologies.bonus_close`, the bounded
dedupe and the retention purge in :mod:`topologies.bonus_sweeps`, and the read queries in
:mod:`topologies.queries`.

Exactly once, under crashes. In the worker every state write is a changelog message of its
own; a crash may keep any prefix of a step's writes, and the receipt is then delivered again
(at least once). So counting a receipt is ONE write: the tally holds the ids of its receipts,
and a receipt is a duplicate exactly when its id is in the tally of its month (the month of
``purchased_at``, which a redelivery repeats). Everything else is written so that any prefix
is harmless and completed by the redelivery or the next close. A counted receipt writes, in
this order:

1. ``open|M|hh`` and ``meta|open_months`` (+M) -- for the first receipt of an open
   household-month, and for every late one (M due or the tally already closed), where the
   entry marks the statement it owes;
2. ``kept|M|hh`` and ``meta|kept_months`` -- when the tally holds no ids yet;
3. ``meta|seen_count`` -- +1, remembering the operation (``+hh|M|rid``);
4. ``tally|hh|M`` -- THE count: figures and receipt id together;
5. late only: ``stmt|hh|M|seq``, ``stated|hh|M`` (a statement or correction, if the stated
   figures changed), then the ``open|M|hh`` delete and ``meta|open_months`` (-M unless another
   household still owes M's statement).

A crash before 4 leaves the receipt uncounted: the redelivery counts it once, rewriting the
same index entries (idempotent) and not adding to the counter a second time (3 is skipped
when the counter's last operation is this one). Index entries whose tally never came are
harmless: a close skips an ``open|`` entry without a tally and the expiry drops a ``kept|``
entry whose tally holds no ids. A crash after 4 leaves the receipt counted: its redelivery is a
duplicate that changes nothing and sends the current tally and statements again (outputs lost
in the crash go out again under the same keys). A statement the crash cut off is still owed
by the ``open|`` entry of 1, and M is then due (or the tally closed): the close at the next
step or :func:`tick` -- or the redelivery itself, if the clock went back before M's close
instant -- issues it from the tally and ``stated``. A statement's seq is always the last
*stated* seq + 1, and ``stmt|`` is written before ``stated|``, so a crash between them makes
the re-issue overwrite the same seq with the same figures (only ``issued_at`` may differ): a
statement is never lost and never repeated under a new seq.

The close of a month writes, per owed household, the tally (``closed``), ``stmt|``,
``stated|``, then deletes its ``open|`` entry; ``meta|open_months`` is written after the whole
month, so a cut-short close is redone for the households still listed (a household already
stated is only sent again).
"""

from __future__ import annotations

from typing import Any, cast

from topologies import card_register
from topologies.bonus_close import close_due_months
from topologies.bonus_ledger import (
    RECEIPTS_LOW_KEY,
    RETENTION_SWEEP_KEY,
    SEEN_COUNT_KEY,
    HouseholdLink,
    MemberRole,
    Tally,
    add_receipt,
    finish_late,
    holds,
    household_receipt,
    mark_open,
    member_key,
    new_tally,
    receipt_key,
    reemit,
    register_key,
    tally_emit,
    tally_key,
)
from topologies.bonus_rules import close_at
from topologies.bonus_sweeps import change_seen, keep, maybe_sweep, purge_expired
from topologies.context import Context
from topologies.record_types import ReceiptTotal, RegisterHousehold
from topologies.records import Reject, StepResult
from topologies.schedule import run_on_grid
from topologies.state import State

STAGE = "household_bonus"
INPUTS = ("receipts.totals", card_register.HOUSEHOLDS_TOPIC)


def step(
    ctx: Context, state: State, topic: str, key: str | None, value: dict[str, Any] | None
) -> StepResult:
    """Process one record of ``receipts.totals`` or ``register.households``."""
    if topic == card_register.HOUSEHOLDS_TOPIC:
        return _on_register(state, key, cast("RegisterHousehold | None", value))
    return _on_total(ctx, state, key, cast("ReceiptTotal | None", value))


def _on_total(
    ctx: Context, state: State, key: str | None, value: ReceiptTotal | None
) -> StepResult:
    """Count a receipt total into its household-month, once (see the module docstring)."""
    result = StepResult()
    # Time-driven work first: whatever was due by now happened before this record, so a
    # receipt processed at or after a month's close instant is a late (correcting) one.
    open_months = close_due_months(ctx, state, result)
    maybe_sweep(ctx, state, result)

    if value is None or key is None:
        result.rejects.append(Reject("missing_value", "receipts.totals needs key and value"))
        return result
    hh, rid, cid = value["household_id"], value["receipt_id"], value["customer_id"]
    if any("|" in s for s in (key, hh, rid, cid)):
        result.rejects.append(
            Reject("bad_identifier", "household, receipt and customer ids must not contain '|'")
        )
        return result
    if key != hh:
        # The household on the record decides (the link known when the receipt was routed);
        # a record keyed otherwise would land in another partition's ledger.
        result.rejects.append(Reject("key_mismatch", "receipt total not keyed by its household"))
        return result

    month = ctx.rules.local_month(value["purchased_at"])
    tkey = tally_key(hh, month)
    stored: Tally | None = state.get(tkey)
    if stored is not None and holds(stored["receipt_ids"], rid):
        result.events["duplicate"] += 1
        if stored["closed"] and month in open_months:
            # A stated month still listed as open after the close above: its close instant
            # is ahead (the clock went back). A crash may have cut off this household's late
            # statement or its clean-up, which no close would finish now: do it here (its
            # emits are in the re-send below).
            finished = StepResult()
            finish_late(ctx, state, stored, open_months, finished)
            result.events.update(finished.events)
        reemit(state, hh, month, result)
        return result

    # Late: the month is due (it was closed just above if it had any household) or this
    # household's tally was already stated (the clock went back): the change must be stated.
    late = ctx.now_ms >= close_at(ctx.rules, month) or (stored is not None and stored["closed"])
    tally = new_tally(hh, month) if stored is None else {**stored}
    # The indexes before the tally (see module docstring): idempotent, harmless without it.
    if late or stored is None:
        mark_open(state, month, hh, open_months)
    if not tally["receipt_ids"]:
        keep(ctx, state, hh, month)
    # Read-side indexes, idempotent: a redelivery after a crash rewrites the same values.
    if stored is None:
        state.set(f"hrm|{month}|{hh}", 1)  # retention index: months with a receipt list
        low = state.get(RECEIPTS_LOW_KEY)
        if low is None or month < low:
            state.set(RECEIPTS_LOW_KEY, month)
    state.set(receipt_key(hh, month, rid), household_receipt(value))
    # The member's role at their latest purchase (purchase time, not processing order: a
    # receipt from before a role change, processed late, does not undo it).
    held_member: MemberRole | None = state.get(member_key(hh, cid))
    at = value["purchased_at"]
    if held_member is None or held_member.get("at", -1) < at:
        role: MemberRole = {"role": value["role"], "at": at}
        state.set(member_key(hh, cid), role)
    add_receipt(ctx.rules, tally, value)
    tally["updated_at"] = ctx.now_ms
    if late:
        tally["closed"] = True
    change_seen(state, f"+{hh}|{month}|{rid}", 1)
    state.set(tkey, tally)  # the count: figures and receipt id in one write
    result.emits.append(tally_emit(tally))
    if late:
        if not finish_late(ctx, state, tally, open_months, result):
            # E.g. a zero-eligible receipt of a member already listed: nothing stated changes.
            result.events["late_unchanged"] += 1
        result.events["late_receipt"] += 1
    result.events["counted"] += 1
    return result


def tick(ctx: Context, state: State) -> StepResult:
    """Time-driven work: the month close, the dedupe expiry and the retention purge.

    Closes the months that are due, expires the receipt ids that are due now, and runs the
    retention purge of the household receipt lists when it is due.
    """
    result = StepResult()
    close_due_months(ctx, state, result)
    maybe_sweep(ctx, state, result, force=True)
    run_on_grid(
        ctx,
        state,
        RETENTION_SWEEP_KEY,
        ctx.rules.retention_sweep_interval_ms,
        lambda: purge_expired(ctx, state, result),
    )
    return result


def seen_count(state: State) -> int:
    """Number of receipt ids held for dedupe (the dedupe state size), without a scan."""
    counter = state.get(SEEN_COUNT_KEY)
    return int(counter["n"]) if counter is not None else 0


def _on_register(state: State, key: str | None, value: RegisterHousehold | None) -> StepResult:
    """Who is in the household now, by the card register (stage 1): current links only."""
    result = StepResult()
    if key is None or value is None or value["household_id"] != key:
        result.rejects.append(Reject("key_mismatch", "register record not keyed by household"))
        return result
    rkey = register_key(key, value["customer_id"], value["card_number"])
    current = [p for p in value["periods"] if p["to"] is None]
    held = state.get(rkey)
    if current:
        now: HouseholdLink = {"role": current[-1]["role"], "from": current[-1]["from"]}
        if held != now:
            state.set(rkey, now)
    elif held is not None:
        state.delete(rkey)
    result.events["register_updated"] += 1
    return result
