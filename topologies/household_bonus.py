"""Stage 4, keyed by household id: the household Bonus ledger and its monthly statements.

Input: ``receipts.totals`` (stage 2's receipt-total records, keyed by the household the card
was linked to when the receipt was routed). Rules: docs/domain.md §4; every number comes from
``[bonus]`` in ``config/pipeline.toml`` (:class:`topologies.rules.Rules`).

Per household and calendar month (Helsinki time of ``purchased_at``, however late the receipt
arrives) the stage keeps a tally: the eligible cents (returns are negative receipts), the
receipt count, each member's own eligible cents, the payment-method benefit base and the ids
of the receipts counted. Every change is emitted on ``household.bonus`` keyed
``<household>|<month>`` (a compacted topic, so a replay overwrites the same keys). The Bonus
rate is the tier of the *whole* month total and the Bonus is rounded once, on the month total,
in integer arithmetic.

A month M closes at 00:00 Helsinki on ``close_day`` of M+1: every household with a receipt in
M then gets a statement (``bonus.statements``, key ``<household>|<month>|<seq>``, seq 0). A
receipt counted after that changes the tally *and* issues a CORRECTION (seq + 1) with the
differences, so a closed month never changes silently. Closing is driven by the processing
clock: each step (and :func:`tick`) first closes every month that is due.

State (``|``-separated keys; household and receipt ids must not contain ``|``):

====================================  ==================================================
``tally|<household>|<month>``         the month's figures (what :func:`query` returns)
                                      *and* ``receipt_ids``, the sorted ids of the
                                      receipts counted into it (internal: never emitted
                                      nor returned by :func:`query`)
``open|<month>|<household>``          statement owed: the household-month is not stated
                                      yet (open month) or a late receipt's correction is
                                      being issued; a close scans only its month
``stated|<household>|<month>``        the last statement issued (base of a correction)
``stmt|<household>|<month>|<seq>``    every statement issued (history for :func:`query`)
``kept|<month>|<household>``          index of the tallies that hold receipt ids, so the
                                      dedupe expiry reads only the months that are due
``meta|open_months``                  sorted months that have ``open|`` entries; the
                                      earliest one's close instant is the next due close
``meta|kept_months``                  ``{month: earliest instant its ids may expire}``
``meta|dedupe_sweep_at``              next time the dedupe expiry runs
``meta|seen_count``                   ``{"n": receipt ids held, "op": last change}``
``hr|<household>|<month>|<receipt>``  the household's Bonus purchases at receipt-total
                                      level (no customer id: what a main member may see,
                                      docs/domain.md §5); removed by the retention purge
``hrm|<month>|<household>``           index of the receipt lists by month (retention)
``mem|<household>|<customer>``        the member's card role (MAIN_MEMBER / MEMBER) as last seen
====================================  ==================================================

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

Bounded dedupe. A tally keeps its receipt ids until the dedupe window
(``bonus.dedupe_window_days``, default 35) has passed, in processing time, since the month was
closed *and* since the last receipt was counted into it (a late receipt's id is kept a full
window too). The expiry runs every ``bonus.sweep_interval_minutes`` (and at every
:func:`tick`) over ``meta|kept_months`` -- only the months whose earliest expiry is due, and
in them only the ``kept|`` entries (no full scan) -- and then empties ``receipt_ids`` of each
expired tally (figures unchanged, nothing emitted). ``meta|seen_count`` is the number of ids
held (the dedupe state size metric, :func:`seen_count`): +1 per counted receipt, minus the ids
dropped, never touched by a duplicate. Each change is written just before the tally write it
accounts for and remembers its operation, so redoing a step a crash cut between the two does
not apply it twice; it is only off (by that one change) if the counter is changed by another
operation -- a sweep that became due -- before the cut step is redone.

Consequence of the bound: a receipt delivered again after its month's ids were dropped (more
than the window after the close and after its first delivery) is counted AGAIN and, for a
closed month, issues a correction. That cannot be detected -- the ids are gone -- so the
window must exceed the longest redelivery delay (the input topic's retention and consumer
lag). Dedupe is per household-month: a redelivery with another household or another
``purchased_at`` month is a different receipt to this stage.

A tally holds every receipt id of its household-month and is rewritten per receipt, so a
write costs O(receipts of the month) -- tens for a household, which is fine.
"""

from __future__ import annotations

import bisect
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from topologies import card_register
from topologies.context import Context
from topologies.records import Emit, Reject, StepResult
from topologies.rules import Rules
from topologies.schedule import run_on_grid
from topologies.state import State

STAGE = "household_bonus"
INPUTS = ("receipts.totals", card_register.HOUSEHOLDS_TOPIC)
TALLY_TOPIC = "household.bonus"
STATEMENT_TOPIC = "bonus.statements"

OPEN_MONTHS_KEY = "meta|open_months"
KEPT_MONTHS_KEY = "meta|kept_months"
SWEEP_KEY = "meta|dedupe_sweep_at"
SEEN_COUNT_KEY = "meta|seen_count"
RETENTION_SWEEP_KEY = "meta|retention_sweep_at"
RECEIPTS_LOW_KEY = "meta|receipts_low_month"  # earliest month that may have a receipt list

STATEMENT = "STATEMENT"
CORRECTION = "CORRECTION"
BP_DENOMINATOR = 10_000

# The tally as emitted (BonusTally) and queried; ``receipt_ids`` is internal.
TALLY_FIELDS = (
    "household_id",
    "month",
    "eligible_cents",
    "receipt_count",
    "rate_bp",
    "bonus_cents",
    "payment_benefit_eligible_cents",
    "payment_benefit_cents",
    "members",
    "closed",
    "updated_at",
)

# The figures a statement states; a late receipt that changes none of them needs no correction.
STATED_FIELDS = (
    "eligible_cents",
    "rate_bp",
    "bonus_cents",
    "payment_benefit_eligible_cents",
    "payment_benefit_cents",
    "members",
)


# --- keys --------------------------------------------------------------------------------


def tally_key(household_id: str, month: str) -> str:
    return f"tally|{household_id}|{month}"


def receipt_key(household_id: str, month: str, receipt_id: str) -> str:
    return f"hr|{household_id}|{month}|{receipt_id}"


def member_key(household_id: str, customer_id: str) -> str:
    return f"mem|{household_id}|{customer_id}"


def open_key(month: str, household_id: str) -> str:
    return f"open|{month}|{household_id}"


def stated_key(household_id: str, month: str) -> str:
    return f"stated|{household_id}|{month}"


def statement_key(household_id: str, month: str, seq: int) -> str:
    # Zero-padded so that prefix iteration returns the statements in seq order.
    return f"stmt|{household_id}|{month}|{seq:06d}"


def kept_key(month: str, household_id: str) -> str:
    return f"kept|{month}|{household_id}"


# --- the arithmetic (docs/domain.md §4) ----------------------------------------------------------


def rate_bp(tiers: tuple[tuple[int, int], ...], eligible_cents: int) -> int:
    """Rate of the highest tier whose threshold the month reaches; a negative month is 0 €."""
    amount = max(eligible_cents, 0)
    rate = 0
    for threshold, bp in tiers:
        if amount < threshold:
            break
        rate = bp
    return rate


def apply_bp(cents: int, bp: int) -> int:
    """``round_half_up(max(cents, 0) * bp / 10000)`` in integers (no float ever touches money)."""
    return (max(cents, 0) * bp + BP_DENOMINATOR // 2) // BP_DENOMINATOR


def earns_payment_benefit(rules: Rules, value: dict[str, Any]) -> bool:
    # Paid with the S-Etukortti payment function at S Group's own outlets, not at partners.
    return (
        value["payment_method"] == rules.payment_benefit_method
        and value["chain"] not in rules.partner_chains
    )


def close_at(rules: Rules, month: str) -> int:
    """Epoch ms at which ``month`` closes: 00:00 local time on the close day of the next month."""
    return _close_at(rules.zone, rules.bonus_close_day, month)


@lru_cache(maxsize=4096)
def _close_at(zone: str, close_day: int, month: str) -> int:
    year, mon = int(month[:4]), int(month[5:7])
    year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    # An aware local midnight: zoneinfo picks the offset in force that day (UTC+2 or UTC+3).
    local_midnight = datetime(year, mon, close_day, tzinfo=ZoneInfo(zone))
    return int(local_midnight.timestamp()) * 1000


# --- the step ----------------------------------------------------------------------------


def step(
    ctx: Context, state: State, topic: str, key: str | None, value: dict[str, Any] | None
) -> StepResult:
    if topic == card_register.HOUSEHOLDS_TOPIC:
        return _on_register(state, key, value)
    result = StepResult()
    # Time-driven work first: whatever was due by now happened before this record, so a
    # receipt processed at or after a month's close instant is a late (correcting) one.
    open_months = _close_due_months(ctx, state, result)
    _maybe_sweep(ctx, state, result)

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
    stored = state.get(tkey)
    if stored is not None and _holds(stored["receipt_ids"], rid):
        result.events["duplicate"] += 1
        if stored["closed"] and month in open_months:
            # A stated month still listed as open after the close above: its close instant
            # is ahead (the clock went back). A crash may have cut off this household's late
            # statement or its clean-up, which no close would finish now: do it here (its
            # emits are in the re-send below).
            finished = StepResult()
            _finish_late(ctx, state, stored, open_months, finished)
            result.events.update(finished.events)
        _reemit(state, hh, month, result)
        return result

    # Late: the month is due (it was closed just above if it had any household) or this
    # household's tally was already stated (the clock went back): the change must be stated.
    late = ctx.now_ms >= close_at(ctx.rules, month) or (stored is not None and stored["closed"])
    tally = _new_tally(hh, month) if stored is None else {**stored}
    # The indexes before the tally (see module docstring): idempotent, harmless without it.
    if late or stored is None:
        _mark_open(state, month, hh, open_months)
    if not tally["receipt_ids"]:
        _keep(ctx, state, hh, month)
    # Read-side indexes, idempotent: a redelivery after a crash rewrites the same values.
    if stored is None:
        state.set(f"hrm|{month}|{hh}", 1)  # retention index: months with a receipt list
        low = state.get(RECEIPTS_LOW_KEY)
        if low is None or month < low:
            state.set(RECEIPTS_LOW_KEY, month)
    state.set(receipt_key(hh, month, rid), _household_receipt(value))
    # The member's role at their latest purchase (purchase time, not processing order: a
    # receipt from before a role change, processed late, does not undo it).
    held_member = state.get(member_key(hh, cid))
    at = value["purchased_at"]
    if held_member is None or held_member.get("at", -1) < at:
        state.set(member_key(hh, cid), {"role": value["role"], "at": at})
    _add_receipt(ctx.rules, tally, value)
    tally["updated_at"] = ctx.now_ms
    if late:
        tally["closed"] = True
    _change_seen(state, f"+{hh}|{month}|{rid}", 1)
    state.set(tkey, tally)  # the count: figures and receipt id in one write
    result.emits.append(_tally_emit(tally))
    if late:
        if not _finish_late(ctx, state, tally, open_months, result):
            # E.g. a zero-eligible receipt of a member already listed: nothing stated changes.
            result.events["late_unchanged"] += 1
        result.events["late_receipt"] += 1
    result.events["counted"] += 1
    return result


def tick(ctx: Context, state: State) -> StepResult:
    """Close the months that are due, expire the receipt ids that are due now, and run the
    retention purge of the household receipt lists when it is due."""
    result = StepResult()
    _close_due_months(ctx, state, result)
    _maybe_sweep(ctx, state, result, force=True)
    run_on_grid(
        ctx,
        state,
        RETENTION_SWEEP_KEY,
        ctx.rules.retention_sweep_interval_ms,
        lambda: purge_expired(ctx, state, result),
    )
    return result


def purge_expired(ctx: Context, state: State, result: StepResult) -> int:
    """Delete the household receipt lists of the months wholly older than
    ``household_receipts_days`` (read through the ``hrm|<month>|`` index: no full scan).

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
        month = _next_month(month)
    state.set(RECEIPTS_LOW_KEY, cutoff_month)
    result.events["retention_deleted"] += n
    return n


def _next_month(month: str) -> str:
    y, m = int(month[:4]), int(month[5:7])
    return f"{y + m // 12:04d}-{m % 12 + 1:02d}"


def seen_count(state: State) -> int:
    """Number of receipt ids held for dedupe (the dedupe state size), without a scan."""
    counter = state.get(SEEN_COUNT_KEY)
    return int(counter["n"]) if counter is not None else 0


def query(state: State, household_id: str, month: str) -> dict[str, Any] | None:
    """A household-month as JSON for the CLI and the HTTP API; None if it has no receipt."""
    if "|" in household_id or "|" in month:
        return None
    tally = state.get(tally_key(household_id, month))
    if tally is None:
        return None
    statements = [s for _, s in state.items(f"stmt|{household_id}|{month}|")]
    return {
        "household_id": household_id,
        "month": month,
        "eligible_cents": tally["eligible_cents"],
        "rate_bp": tally["rate_bp"],
        "bonus_cents": tally["bonus_cents"],
        "payment_benefit_eligible_cents": tally["payment_benefit_eligible_cents"],
        "payment_benefit_cents": tally["payment_benefit_cents"],
        "receipt_count": tally["receipt_count"],
        "members": dict(sorted(tally["members"].items())),
        "closed": tally["closed"],
        "statements": statements,
    }


def household_receipts(state: State, household_id: str, month: str) -> list[dict[str, Any]]:
    """The household's Bonus purchases of a month at receipt-total level, oldest first."""
    if "|" in household_id or "|" in month:
        return []
    found = [r for _, r in state.items(f"hr|{household_id}|{month}|")]
    return sorted(found, key=lambda r: (r["purchased_at"], r["receipt_id"]))


def register_key(household_id: str, customer_id: str, card_number: str) -> str:
    return f"hreg|{household_id}|{customer_id}|{card_number}"


def _on_register(state: State, key: str | None, value: dict[str, Any] | None) -> StepResult:
    """Who is in the household now, by the card register (stage 1): current links only."""
    result = StepResult()
    if key is None or value is None or value["household_id"] != key:
        result.rejects.append(Reject("key_mismatch", "register record not keyed by household"))
        return result
    rkey = register_key(key, value["customer_id"], value["card_number"])
    current = [p for p in value["periods"] if p["to"] is None]
    held = state.get(rkey)
    if current:
        now = {"role": current[-1]["role"], "from": current[-1]["from"]}
        if held != now:
            state.set(rkey, now)
    elif held is not None:
        state.delete(rkey)
    result.events["register_updated"] += 1
    return result


def register_members(state: State, household_id: str) -> dict[str, str]:
    """customer id -> role (MAIN_MEMBER / MEMBER) of the household's members now."""
    if "|" in household_id:
        return {}
    best: dict[str, tuple[int, str]] = {}
    for k, v in state.items(f"hreg|{household_id}|"):
        cid = k.split("|")[2]
        if cid not in best or v["from"] > best[cid][0]:
            best[cid] = (v["from"], v["role"])
    return {cid: role for cid, (_, role) in sorted(best.items())}


def household_members(state: State, household_id: str) -> dict[str, str]:
    """customer id -> card role (MAIN_MEMBER / MEMBER) of the household's members seen so far."""
    if "|" in household_id:
        return {}
    prefix = f"mem|{household_id}|"
    return {k[len(prefix) :]: v["role"] for k, v in state.items(prefix)}


def _household_receipt(value: dict[str, Any]) -> dict[str, Any]:
    return {
        "receipt_id": value["receipt_id"],
        "store_id": value["store_id"],
        "chain": value["chain"],
        "purchased_at": value["purchased_at"],
        "total_cents": value["total_cents"],
        "bonus_eligible_cents": value["bonus_eligible_cents"],
        "payment_method": value["payment_method"],
    }


# --- tallies ----------------------------------------------------------------------------


def _new_tally(household_id: str, month: str) -> dict[str, Any]:
    return {
        "household_id": household_id,
        "month": month,
        "eligible_cents": 0,
        "receipt_count": 0,
        "rate_bp": 0,
        "bonus_cents": 0,
        "payment_benefit_eligible_cents": 0,
        "payment_benefit_cents": 0,
        "members": {},
        "closed": False,
        "updated_at": 0,
        "receipt_ids": [],
    }


def _holds(receipt_ids: list[str], rid: str) -> bool:
    i = bisect.bisect_left(receipt_ids, rid)
    return i < len(receipt_ids) and receipt_ids[i] == rid


def _add_receipt(rules: Rules, tally: dict[str, Any], value: dict[str, Any]) -> None:
    """Count one receipt into ``tally`` (a copy) and recompute the derived figures.

    The derived figures are stored, not recomputed on read, so :func:`query` needs no rules
    and shows exactly what was emitted.
    """
    cents = int(value["bonus_eligible_cents"])
    tally["eligible_cents"] += cents
    tally["receipt_count"] += 1
    ids = list(tally["receipt_ids"])
    bisect.insort(ids, value["receipt_id"])
    tally["receipt_ids"] = ids
    members = dict(tally["members"])
    members[value["customer_id"]] = members.get(value["customer_id"], 0) + cents
    tally["members"] = members
    if earns_payment_benefit(rules, value):
        tally["payment_benefit_eligible_cents"] += cents
    tally["rate_bp"] = rate_bp(rules.bonus_tiers, tally["eligible_cents"])
    tally["bonus_cents"] = apply_bp(tally["eligible_cents"], tally["rate_bp"])
    tally["payment_benefit_cents"] = apply_bp(
        tally["payment_benefit_eligible_cents"], rules.payment_benefit_bp
    )


def _members_list(members: dict[str, int]) -> list[dict[str, Any]]:
    return [{"customer_id": c, "eligible_cents": members[c]} for c in sorted(members)]


def _tally_emit(tally: dict[str, Any]) -> Emit:
    record = {f: tally[f] for f in TALLY_FIELDS}
    record["members"] = _members_list(tally["members"])
    return Emit(TALLY_TOPIC, f"{tally['household_id']}|{tally['month']}", record)


def _reemit(state: State, hh: str, month: str, result: StepResult) -> None:
    """Send the current tally and every statement again, unchanged, under the same keys."""
    tally = state.get(tally_key(hh, month))
    if tally is not None:
        result.emits.append(_tally_emit(tally))
    for _, statement in state.items(f"stmt|{hh}|{month}|"):
        result.emits.append(_statement_emit(statement))


# --- statements -------------------------------------------------------------------------


def _statement_emit(statement: dict[str, Any]) -> Emit:
    key = f"{statement['household_id']}|{statement['month']}|{statement['seq']}"
    return Emit(STATEMENT_TOPIC, key, statement)


def _issue(ctx: Context, state: State, tally: dict[str, Any], result: StepResult) -> bool:
    """Issue the household-month's statement, or a correction if the stated figures changed.

    False if the last statement already states the tally's figures (nothing is owed). The
    seq follows ``stated|``, which is written after ``stmt|``: a re-issue after a crash
    between the two rewrites the same seq.
    """
    hh, month = tally["household_id"], tally["month"]
    figures = {f: tally[f] for f in STATED_FIELDS}
    figures["members"] = _members_list(tally["members"])
    last = state.get(stated_key(hh, month))
    if last is None:
        seq, kind = 0, STATEMENT
        delta_bonus, delta_benefit = figures["bonus_cents"], figures["payment_benefit_cents"]
    elif all(last[f] == figures[f] for f in STATED_FIELDS):
        return False
    else:
        seq, kind = last["seq"] + 1, CORRECTION
        delta_bonus = figures["bonus_cents"] - last["bonus_cents"]
        delta_benefit = figures["payment_benefit_cents"] - last["payment_benefit_cents"]
    statement = {
        "household_id": hh,
        "month": month,
        "seq": seq,
        "kind": kind,
        "eligible_cents": figures["eligible_cents"],
        "rate_bp": figures["rate_bp"],
        "bonus_cents": figures["bonus_cents"],
        "payment_benefit_eligible_cents": figures["payment_benefit_eligible_cents"],
        "payment_benefit_cents": figures["payment_benefit_cents"],
        "members": figures["members"],
        "delta_bonus_cents": delta_bonus,
        "delta_payment_benefit_cents": delta_benefit,
        "issued_at": ctx.now_ms,
    }
    state.set(statement_key(hh, month, seq), statement)
    state.set(stated_key(hh, month), statement)
    result.emits.append(_statement_emit(statement))
    result.events["statement" if seq == 0 else "correction"] += 1
    return True


def _write_open_months(state: State, months: list[str]) -> None:
    if months:
        state.set(OPEN_MONTHS_KEY, list(months))
    else:
        state.delete(OPEN_MONTHS_KEY)


def _mark_open(state: State, month: str, hh: str, open_months: list[str]) -> None:
    """Record that ``hh`` owes ``month`` a statement (``open_months`` is updated in place)."""
    state.set(open_key(month, hh), 1)
    if month not in open_months:
        bisect.insort(open_months, month)
        _write_open_months(state, open_months)


def _finish_late(
    ctx: Context, state: State, tally: dict[str, Any], open_months: list[str], result: StepResult
) -> bool:
    """State a late change of a closed tally and clear its ``open|`` mark; True if issued."""
    hh, month = tally["household_id"], tally["month"]
    issued = _issue(ctx, state, tally, result)
    okey = open_key(month, hh)
    if state.get(okey) is not None:
        state.delete(okey)
    if month in open_months and next(state.items(f"open|{month}|"), None) is None:
        open_months.remove(month)
        _write_open_months(state, open_months)
    return issued


def _close_due_months(ctx: Context, state: State, result: StepResult) -> list[str]:
    """Close every open month whose close instant is at or before now; the months left open.

    The months are few (usually the current one, plus the previous one until the close day),
    so the list lives in one meta key and the check costs one get per record.
    """
    months: list[str] = list(state.get(OPEN_MONTHS_KEY) or [])
    closed = 0
    while months and close_at(ctx.rules, months[0]) <= ctx.now_ms:
        _close_month(ctx, state, months[0], result)
        months.pop(0)
        closed += 1
    if closed:
        # Written after the month's households, so a crash mid-close redoes the rest.
        _write_open_months(state, months)
    return months


def _close_month(ctx: Context, state: State, month: str, result: StepResult) -> None:
    prefix = f"open|{month}|"
    for okey, _ in state.items(prefix):
        hh = okey[len(prefix) :]
        tkey = tally_key(hh, month)
        tally = state.get(tkey)
        if tally is not None:  # None: a crash cut the count before its tally write
            if not tally["closed"]:
                tally = {**tally, "closed": True, "updated_at": ctx.now_ms}
                state.set(tkey, tally)
            result.emits.append(_tally_emit(tally))
            if not _issue(ctx, state, tally, result):
                # Stated before a crash cut the close short: send again, issue nothing new.
                for _, statement in state.items(f"stmt|{hh}|{month}|"):
                    result.emits.append(_statement_emit(statement))
        state.delete(okey)  # last: the entry is the "still to do" mark of this household
    result.events["month_closed"] += 1


# --- bounded dedupe -----------------------------------------------------------------------


def _change_seen(state: State, op: str, delta: int) -> None:
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


def _keep_until(rules: Rules, tally: dict[str, Any]) -> int:
    # ``updated_at`` is the processing time of the last count or of the close, if later.
    return max(close_at(rules, tally["month"]), tally["updated_at"]) + rules.bonus_dedupe_window_ms


def _keep(ctx: Context, state: State, hh: str, month: str) -> None:
    """Index a tally that is about to hold receipt ids, for their expiry."""
    state.set(kept_key(month, hh), 1)
    months: dict[str, int] = dict(state.get(KEPT_MONTHS_KEY) or {})
    due = max(close_at(ctx.rules, month), ctx.now_ms) + ctx.rules.bonus_dedupe_window_ms
    if month not in months or due < months[month]:  # usually unchanged: no write
        months[month] = due
        state.set(KEPT_MONTHS_KEY, months)


def _maybe_sweep(ctx: Context, state: State, result: StepResult, *, force: bool = False) -> None:
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
            _change_seen(state, f"-{hh}|{month}", -dropped)
            state.set(tkey, {**tally, "receipt_ids": []})
            state.delete(kkey)
            result.events["dedupe_expired"] += dropped
        else:
            # Counted late, or (after a crash) not closed yet: look again when it is due.
            next_due = until if next_due is None else min(next_due, until)
    return next_due
