"""The household Bonus stage's sweeps: the bounded dedupe and the retention of receipt lists.

Bounded dedupe. A tally keeps its receipt ids until the dedupe window
(``bonus.dedupe_window_days``, default 35) has passed, in processing time, since the month was
closed *and* since the last receipt was counted into it (a late receipt's id is kept a full
window too). The expiry runs every ``bonus.sweep_interval_minutes`` (and at every tick of the
stage) over ``meta|kept_months`` -- only the months whose earliest expiry is due, and in them
only the ``kept|`` entries (no full scan) -- and then empties ``receipt_ids`` of each expired
tally (figures unchanged, nothing emitted). ``meta|seen_count`` is the number of ids held (the
dedupe state size metric, :func:`topologies.household_bonus.seen_count`): +1 per counted
receipt, minus the ids dropped, never touched by a duplicate. Each change is written just
before the tally write it accounts for and remembers its operation, so redoing a step a crash
cut between the two does not apply it twice; it is only off (by that one change) if the
counter is changed by another operation -- a sweep that became due -- before the cut step is
redone.

Consequence of the bound: a receipt delivered again after its month's ids were dropped (more
than the window after the close and after its first delivery) is counted AGAIN and, for a
closed month, issues a correction. That cannot be detected -- the ids are gone -- so the
window must exceed the longest redelivery delay (the input topic's retention and consumer
lag). Dedupe is per household-month: a redelivery with another household or another
``purchased_at`` month is a different receipt to this stage.

Retention. The household receipt lists (``hr|``) of the months wholly older than
``retention.household_receipts_days`` are deleted every ``retention.sweep_interval_minutes``
(:func:`purge_expired`); the tallies and statements are the Bonus accounting and stay.
"""

from __future__ import annotations

from topologies.bonus_ledger import (
    KEPT_MONTHS_KEY,
    RECEIPTS_LOW_KEY,
    SEEN_COUNT_KEY,
    SWEEP_KEY,
    Tally,
    kept_key,
    tally_key,
)
from topologies.bonus_rules import close_at, next_month
from topologies.context import Context
from topologies.records import StepResult
from topologies.rules import Rules
from topologies.state import State

# --- bounded dedupe -----------------------------------------------------------------------


def change_seen(state: State, op: str, delta: int) -> None:
    """Add ``delta`` to the count of ids held, once per ``op``.

    Written just before the tally write it accounts for: a step redone after a crash between
    the two finds its own ``op`` as the last one and does not apply it again. An op recurs
    legitimately only after other ops (an id is counted again only after its tally's ids were
    dropped, and dropped again only after an id was added), so the check never skips one.
    """
    counter = state.get(SEEN_COUNT_KEY)
    if counter is None:
        counter = {"n": 0, "op": ""}
    if counter["op"] != op:
        state.set(SEEN_COUNT_KEY, {"n": counter["n"] + delta, "op": op})


def _keep_until(rules: Rules, tally: Tally) -> int:
    # ``updated_at`` is the processing time of the last count or of the close, if later.
    return max(close_at(rules, tally["month"]), tally["updated_at"]) + rules.bonus_dedupe_window_ms


def keep(ctx: Context, state: State, hh: str, month: str) -> None:
    """Index a tally that is about to hold receipt ids, for their expiry."""
    state.set(kept_key(month, hh), 1)
    months: dict[str, int] = dict(state.get(KEPT_MONTHS_KEY) or {})
    due = max(close_at(ctx.rules, month), ctx.now_ms) + ctx.rules.bonus_dedupe_window_ms
    if month not in months or due < months[month]:  # usually unchanged: no write
        months[month] = due
        state.set(KEPT_MONTHS_KEY, months)


def maybe_sweep(ctx: Context, state: State, result: StepResult, *, force: bool = False) -> None:
    """Drop the receipt ids whose keep time is over, in the months that are due.

    ``meta|kept_months`` holds, per month, a lower bound of the instant its first tally's ids
    may expire; only months past it are read, and in them only their ``kept|`` entries.
    """
    next_at = state.get(SWEEP_KEY)
    if not force and next_at is not None and ctx.now_ms < next_at:
        return
    months: dict[str, int] = dict(state.get(KEPT_MONTHS_KEY) or {})
    if not months and next_at is None:
        return  # nothing kept yet: leave the state untouched
    changed = False
    for month in sorted(m for m, due in months.items() if due <= ctx.now_ms):
        next_due = _sweep_month(ctx, state, month, result)
        if next_due is None:
            del months[month]
            changed = True
        elif next_due != months[month]:
            months[month] = next_due
            changed = True
    if changed:
        # After the month's tallies: a crash mid-sweep leaves the sweep due, and it is redone.
        if months:
            state.set(KEPT_MONTHS_KEY, months)
        else:
            state.delete(KEPT_MONTHS_KEY)
    state.set(SWEEP_KEY, ctx.now_ms + ctx.rules.bonus_sweep_interval_ms)


def _sweep_month(ctx: Context, state: State, month: str, result: StepResult) -> int | None:
    """Expire the month's due receipt ids; the earliest keep end of those left, None if none."""
    prefix = f"kept|{month}|"
    next_due: int | None = None
    for kkey, _ in state.items(prefix):
        hh = kkey[len(prefix) :]
        tkey = tally_key(hh, month)
        tally = state.get(tkey)
        if tally is None or not tally["receipt_ids"]:
            state.delete(kkey)  # a crash cut the count before its tally write
            continue
        until = _keep_until(ctx.rules, tally)
        if tally["closed"] and until <= ctx.now_ms:
            dropped = len(tally["receipt_ids"])
            change_seen(state, f"-{hh}|{month}", -dropped)
            state.set(tkey, {**tally, "receipt_ids": []})
            state.delete(kkey)
            result.events["dedupe_expired"] += dropped
        else:
            # Counted late, or (after a crash) not closed yet: look again when it is due.
            next_due = until if next_due is None else min(next_due, until)
    return next_due


def purge_expired(ctx: Context, state: State, result: StepResult) -> int:
    """Delete the household receipt lists of the months wholly past their retention.

    That is ``retention.household_receipts_days``, read through the ``hrm|<month>|`` index
    (no full scan).

    The tallies and statements are the Bonus accounting and stay (they hold no receipt
    details; their per-member sums are what the ledger must keep at household level).
    """
    cutoff_month = ctx.rules.local_month(ctx.now_ms - ctx.rules.keep_ms("household_receipts"))
    low = state.get(RECEIPTS_LOW_KEY)
    n = 0
    if low is None or low >= cutoff_month:
        result.events["retention_deleted"] += n
        return n
    month = low
    while month < cutoff_month:
        for mkey, _ in list(state.items(f"hrm|{month}|")):
            hh = mkey.split("|")[2]
            for skey, _ in list(state.items(f"hr|{hh}|{month}|")):
                state.delete(skey)
                n += 1
            state.delete(mkey)
        month = next_month(month)
    state.set(RECEIPTS_LOW_KEY, cutoff_month)
    result.events["retention_deleted"] += n
    return n
