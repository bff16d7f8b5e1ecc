"""Who may see what (docs/domain.md §5, from *Q&A 2016*), as plain functions the API layer calls.

=============  ===========================================================================
viewer         sees
=============  ===========================================================================
purchaser      own product-level purchases and counters; own receipt totals
main member    the household's members; **all** household Bonus purchases at receipt-total
               level; the household Bonus
other member   who the main member is; the household's joint Bonus accrual; household
               purchases summarised by chain; **own** receipt totals only
anyone else    nothing
=============  ===========================================================================

Customer service staff are not in the table: they act for the co-op under a stated purpose
(``STAFF_PURPOSES``), and every read they make is audited like any other.

Only who the caller is (customer or staff, and their id) comes from the signed token
(stream/serve/auth.py). The household and the household role come from the card register the
workers hold (the ``register.*`` topics and the stage state built from them), never from the
token: :func:`in_household` sets them from the household's members now. The checks here
compare the caller with the *subject* of the request. A refusal never depends on whether the
requested data exists, so a 403 reveals nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CUSTOMER = "customer"
STAFF = "staff"
MAIN = "main"
MEMBER = "member"

# What a viewer can ask for. "own_*" kinds are about one person, the others about a household.
PRODUCT_LEVEL = "product_level"  # line items of one's own purchases
COUNTERS = "counters"  # S-mobiili counters (derived from product-level data)
RECEIPT_TOTALS = "receipt_totals"  # one person's receipt totals
EXTRACT = "extract"  # the register extract: everything held about one person
MEMBERSHIP = "membership"  # one's own household and role in the card register now
HOUSEHOLD_MEMBERS = "household_members"
HOUSEHOLD_RECEIPTS = "household_receipts"  # every household Bonus purchase, total level
HOUSEHOLD_BONUS = "household_bonus"  # the household's full Bonus figures
JOINT_BONUS = "joint_bonus"  # the joint accrual (eligible, rate, Bonus)
WHO_IS_MAIN = "main_member"  # who the main member is
CHAIN_SUMMARY = "chain_summary"  # household purchases summarised by chain

PERSONAL_KINDS = frozenset({PRODUCT_LEVEL, COUNTERS, RECEIPT_TOTALS, EXTRACT, MEMBERSHIP})
HOUSEHOLD_KINDS = frozenset(
    {
        HOUSEHOLD_MEMBERS,
        HOUSEHOLD_RECEIPTS,
        HOUSEHOLD_BONUS,
        JOINT_BONUS,
        WHO_IS_MAIN,
        CHAIN_SUMMARY,
    }
)
# The household's joint accrual (JOINT_BONUS): the ledger's fields both roles may see.
JOINT_BONUS_FIELDS = ("eligible_cents", "rate_bp", "bonus_cents", "receipt_count")
MAIN_SEES = HOUSEHOLD_KINDS
MEMBER_SEES = frozenset({WHO_IS_MAIN, JOINT_BONUS, CHAIN_SUMMARY})
# Purposes customer service may state; anything else is refused (and audited as denied).
STAFF_PURPOSES = frozenset({"customer_request", "register_extract_request", "product_recall"})


@dataclass(frozen=True)
class Viewer:
    """Who asks: a customer (with their household and role) or a staff member."""

    kind: str  # CUSTOMER or STAFF
    subject: str  # customer id, or the staff member's id
    household_id: str | None = None
    household_role: str | None = None  # MAIN or MEMBER (customers)


def may_see(
    viewer: Viewer,
    kind: str,
    *,
    customer_id: str | None = None,
    household_id: str | None = None,
    purpose: str | None = None,
) -> bool:
    """Whether ``viewer`` may see data of ``kind`` about ``customer_id`` / ``household_id``."""
    if viewer.kind == STAFF:
        # Staff read one person's data for a stated purpose; household views go through the
        # person's own figures, product recalls through the recall run (audited there).
        return kind in PERSONAL_KINDS and customer_id is not None and purpose in STAFF_PURPOSES
    if viewer.kind != CUSTOMER:
        return False
    if kind in PERSONAL_KINDS:
        return customer_id is not None and customer_id == viewer.subject
    if kind in HOUSEHOLD_KINDS:
        if household_id is None or household_id != viewer.household_id:
            return False
        if viewer.household_role == MAIN:
            return kind in MAIN_SEES
        if viewer.household_role == MEMBER:
            return kind in MEMBER_SEES
    return False


def in_household(viewer: Viewer, household_id: str, members: dict[str, str]) -> Viewer:
    """``viewer`` with the household and role the card register gives them *now*.

    ``members`` is the household's members now by the register (customer id -> card role),
    never what a token claims (docs/domain.md §1, "the card register in time"): someone not in it
    gets no household, so :func:`may_see` refuses every household kind.
    """
    role = members.get(viewer.subject) if viewer.kind == CUSTOMER else None
    if role is None:
        return Viewer(viewer.kind, viewer.subject)
    return Viewer(
        viewer.kind, viewer.subject, household_id, MAIN if role == "MAIN_MEMBER" else MEMBER
    )


def household_view(
    viewer: Viewer,
    bonus: dict[str, Any],
    receipts: list[dict[str, Any]],
    members: dict[str, str],
) -> dict[str, Any]:
    """The household Bonus response as the viewer's role allows (call after :func:`may_see`).

    ``bonus`` is the month's ledger figures, ``receipts`` the household's receipt-total
    records of the month, ``members`` customer id -> card role ("MAIN_MEMBER" / "MEMBER").
    """
    hh = bonus["household_id"]
    main_member = sorted(c for c, role in members.items() if role == "MAIN_MEMBER")
    view: dict[str, Any] = {"household_id": hh, "month": bonus["month"]}
    if may_see(viewer, WHO_IS_MAIN, household_id=hh):
        view["main_member"] = main_member[0] if main_member else None
    if may_see(viewer, JOINT_BONUS, household_id=hh):
        view["joint"] = joint_bonus(bonus)
    if may_see(viewer, CHAIN_SUMMARY, household_id=hh):
        view["chains"] = chain_summary(receipts)
    if may_see(viewer, HOUSEHOLD_BONUS, household_id=hh):
        view["bonus"] = bonus
    if may_see(viewer, HOUSEHOLD_MEMBERS, household_id=hh):
        view["members"] = [{"customer_id": c, "role": members[c]} for c in sorted(members)]
    if may_see(viewer, HOUSEHOLD_RECEIPTS, household_id=hh):
        view["receipts"] = receipts
    return view


def joint_bonus(bonus: Mapping[str, Any]) -> dict[str, Any]:
    """The joint accrual of a household-month: what both household roles may see.

    The one projection of the ledger's figures for :data:`JOINT_BONUS`, used by the household
    Bonus response and by the live feed's ``bonus`` events (nothing finer: per-member sums
    are for the main member's own request).
    """
    return {k: bonus[k] for k in JOINT_BONUS_FIELDS}


def chain_summary(receipts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Household purchases per chain: receipts, total and Bonus-eligible cents."""
    chains: dict[str, dict[str, Any]] = {}
    for r in receipts:
        c = chains.setdefault(
            r["chain"],
            {"chain": r["chain"], "receipt_count": 0, "total_cents": 0, "eligible_cents": 0},
        )
        c["receipt_count"] += 1
        c["total_cents"] += r["total_cents"]
        c["eligible_cents"] += r["bonus_eligible_cents"]
    return [chains[k] for k in sorted(chains)]
