"""The household Bonus ledger: its state layout, the tallies and the statements.

Per household and calendar month (Helsinki time of ``purchased_at``, however late the receipt
arrives) the ledger keeps a tally: the eligible cents (returns are negative receipts), the
receipt count, each member's own eligible cents, the payment-method benefit base and the ids
of the receipts counted. Every change is emitted on ``household.bonus`` keyed
``<household>|<month>`` (a compacted topic, so a replay overwrites the same keys).

A month M closes at 00:00 Helsinki on ``close_day`` of M+1 (:mod:`topologies.bonus_close`):
every household with a receipt in M then gets a statement (``bonus.statements``, key
``<household>|<month>|<seq>``, seq 0). A receipt counted after that changes the tally *and*
issues a CORRECTION (seq + 1) with the differences, so a closed month never changes silently.

State (``|``-separated keys; household and receipt ids must not contain ``|``):

====================================  ==================================================
``tally|<household>|<month>``         the month's figures (what :mod:`topologies.queries` reads)
                                      *and* ``receipt_ids``, the sorted ids of the
                                      receipts counted into it (internal: never emitted
                                      nor returned by the query)
``open|<month>|<household>``          statement owed: the household-month is not stated
                                      yet (open month) or a late receipt's correction is
                                      being issued; a close scans only its month
``stated|<household>|<month>``        the last statement issued (base of a correction)
``stmt|<household>|<month>|<seq>``    every statement issued (history for the query)
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

A tally holds every receipt id of its household-month and is rewritten per receipt, so a
write costs O(receipts of the month) -- tens for a household, which is fine. Why the writes
come in the order they do: :mod:`topologies.household_bonus`.
"""

from __future__ import annotations

import bisect
from typing import Any, TypedDict

from topologies.bonus_rules import apply_bp, earns_payment_benefit, rate_bp
from topologies.context import Context
from topologies.record_types import BonusMember, BonusStatement, BonusTally, ReceiptTotal
from topologies.records import Emit, StepResult
from topologies.rules import Rules
from topologies.state import State

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


class Tally(TypedDict):
    """A household-month's tally as stored (``tally|``).

    ``BonusTally`` with the members as a map, and the receipt ids counted into it (internal:
    never emitted nor queried).
    """

    household_id: str
    month: str
    eligible_cents: int
    receipt_count: int
    rate_bp: int
    bonus_cents: int
    payment_benefit_eligible_cents: int
    payment_benefit_cents: int
    members: dict[str, int]  # customer id -> own eligible cents
    closed: bool
    updated_at: int
    receipt_ids: list[str]


class HouseholdReceipt(TypedDict):
    """A Bonus purchase at receipt-total level, without the customer (``hr|``)."""

    receipt_id: str
    store_id: str
    chain: str
    purchased_at: int
    total_cents: int
    bonus_eligible_cents: int
    payment_method: str


class MemberRole(TypedDict):
    """A member's card role as of their latest purchase (``mem|``)."""

    role: str
    at: int


# A member's current link by the card register (``hreg|``).
HouseholdLink = TypedDict("HouseholdLink", {"role": str, "from": int})


# --- keys --------------------------------------------------------------------------------


def tally_key(household_id: str, month: str) -> str:
    """State key of a household-month's tally."""
    return f"tally|{household_id}|{month}"


def receipt_key(household_id: str, month: str, receipt_id: str) -> str:
    """State key of a household's Bonus purchase (receipt-total level)."""
    return f"hr|{household_id}|{month}|{receipt_id}"


def member_key(household_id: str, customer_id: str) -> str:
    """State key of a member's card role as last seen on a receipt."""
    return f"mem|{household_id}|{customer_id}"


def open_key(month: str, household_id: str) -> str:
    """State key of a statement owed (month first: a close scans only its month)."""
    return f"open|{month}|{household_id}"


def stated_key(household_id: str, month: str) -> str:
    """State key of the last statement issued for a household-month."""
    return f"stated|{household_id}|{month}"


def statement_key(household_id: str, month: str, seq: int) -> str:
    """State key of a statement; the seq is zero-padded so prefix iteration is in seq order."""
    return f"stmt|{household_id}|{month}|{seq:06d}"


def kept_key(month: str, household_id: str) -> str:
    """State key of the index entry of a tally that holds receipt ids (dedupe expiry)."""
    return f"kept|{month}|{household_id}"


def register_key(household_id: str, customer_id: str, card_number: str) -> str:
    """State key of a member's current link to the household on one card (card register)."""
    return f"hreg|{household_id}|{customer_id}|{card_number}"


def household_receipt(value: ReceiptTotal) -> HouseholdReceipt:
    """The receipt-total record without the person (what a main member may see)."""
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


def new_tally(household_id: str, month: str) -> Tally:
    """The tally of a household-month with no receipt."""
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


def holds(receipt_ids: list[str], rid: str) -> bool:
    """Whether the sorted ``receipt_ids`` hold ``rid``."""
    i = bisect.bisect_left(receipt_ids, rid)
    return i < len(receipt_ids) and receipt_ids[i] == rid


def add_receipt(rules: Rules, tally: Tally, value: ReceiptTotal) -> None:
    """Count one receipt into ``tally`` (a copy) and recompute the derived figures.

    The derived figures are stored, not recomputed on read, so a query needs no rules
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


def members_list(members: dict[str, int]) -> list[BonusMember]:
    """The members' own eligible cents as emitted, by customer id."""
    return [{"customer_id": c, "eligible_cents": members[c]} for c in sorted(members)]


def tally_emit(tally: Tally) -> Emit:
    """The ``household.bonus`` record of a tally (the fields of :data:`TALLY_FIELDS`)."""
    record: BonusTally = {
        "household_id": tally["household_id"],
        "month": tally["month"],
        "eligible_cents": tally["eligible_cents"],
        "receipt_count": tally["receipt_count"],
        "rate_bp": tally["rate_bp"],
        "bonus_cents": tally["bonus_cents"],
        "payment_benefit_eligible_cents": tally["payment_benefit_eligible_cents"],
        "payment_benefit_cents": tally["payment_benefit_cents"],
        "members": members_list(tally["members"]),
        "closed": tally["closed"],
        "updated_at": tally["updated_at"],
    }
    return Emit(TALLY_TOPIC, f"{tally['household_id']}|{tally['month']}", record)


def reemit(state: State, hh: str, month: str, result: StepResult) -> None:
    """Send the current tally and every statement again, unchanged, under the same keys."""
    tally = state.get(tally_key(hh, month))
    if tally is not None:
        result.emits.append(tally_emit(tally))
    for _, statement in state.items(f"stmt|{hh}|{month}|"):
        result.emits.append(statement_emit(statement))


# --- statements -------------------------------------------------------------------------


def statement_emit(statement: BonusStatement) -> Emit:
    """The ``bonus.statements`` record of a statement, keyed ``<household>|<month>|<seq>``."""
    key = f"{statement['household_id']}|{statement['month']}|{statement['seq']}"
    return Emit(STATEMENT_TOPIC, key, statement)


def issue(ctx: Context, state: State, tally: Tally, result: StepResult) -> bool:
    """Issue the household-month's statement, or a correction if the stated figures changed.

    False if the last statement already states the tally's figures (nothing is owed). The
    seq follows ``stated|``, which is written after ``stmt|``: a re-issue after a crash
    between the two rewrites the same seq.
    """
    hh, month = tally["household_id"], tally["month"]
    figures: dict[str, Any] = {f: tally[f] for f in STATED_FIELDS}  # type: ignore[literal-required]
    figures["members"] = members_list(tally["members"])
    last: BonusStatement | None = state.get(stated_key(hh, month))
    if last is None:
        seq, kind = 0, STATEMENT
        delta_bonus, delta_benefit = figures["bonus_cents"], figures["payment_benefit_cents"]
    elif all(last[f] == figures[f] for f in STATED_FIELDS):  # type: ignore[literal-required]
        return False
    else:
        seq, kind = last["seq"] + 1, CORRECTION
        delta_bonus = figures["bonus_cents"] - last["bonus_cents"]
        delta_benefit = figures["payment_benefit_cents"] - last["payment_benefit_cents"]
    statement: BonusStatement = {
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
    result.emits.append(statement_emit(statement))
    result.events["statement" if seq == 0 else "correction"] += 1
    return True


def write_open_months(state: State, months: list[str]) -> None:
    """Store the months that have ``open|`` entries (none: the key goes)."""
    if months:
        state.set(OPEN_MONTHS_KEY, list(months))
    else:
        state.delete(OPEN_MONTHS_KEY)


def mark_open(state: State, month: str, hh: str, open_months: list[str]) -> None:
    """Record that ``hh`` owes ``month`` a statement (``open_months`` is updated in place)."""
    state.set(open_key(month, hh), 1)
    if month not in open_months:
        bisect.insort(open_months, month)
        write_open_months(state, open_months)


def finish_late(
    ctx: Context, state: State, tally: Tally, open_months: list[str], result: StepResult
) -> bool:
    """State a late change of a closed tally and clear its ``open|`` mark; True if issued."""
    hh, month = tally["household_id"], tally["month"]
    issued = issue(ctx, state, tally, result)
    okey = open_key(month, hh)
    if state.get(okey) is not None:
        state.delete(okey)
    if month in open_months and next(state.items(f"open|{month}|"), None) is None:
        open_months.remove(month)
        write_open_months(state, open_months)
    return issued
