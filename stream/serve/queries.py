"""Read-side queries shared by the CLI (on replay state) and the worker's HTTP API (on tables).

One function per question, over a :class:`topologies.state.State`, so the access rules of a
later API layer wrap these calls instead of re-implementing them.
"""

from __future__ import annotations

from typing import Any

from topologies import consent as consent_rules
from topologies.personal_stores import recall_key
from topologies.queries import household_bonus
from topologies.queries.personal import register_history, register_now
from topologies.rules import Rules
from topologies.state import State


def household_bonus_month(state: State, household_id: str, month: str) -> dict[str, Any]:
    """The household's Bonus figures for a month; all zero when it has no receipt yet."""
    found = household_bonus.query(state, household_id, month)
    if found is not None:
        return found
    return {
        "household_id": household_id,
        "month": month,
        "eligible_cents": 0,
        "rate_bp": 0,
        "bonus_cents": 0,
        "payment_benefit_eligible_cents": 0,
        "payment_benefit_cents": 0,
        "receipt_count": 0,
        "members": {},
        "closed": False,
        "statements": [],
    }


def _in_month(rules: Rules, record: dict[str, Any], month: str) -> bool:
    return rules.local_month(record["purchased_at"]) == month


def purchases_month(state: State, rules: Rules, customer_id: str, month: str) -> dict[str, Any]:
    """The customer's product-level purchases of a month (the personal store), oldest first."""
    receipts = [
        rec for _k, rec in state.items(f"pl|{customer_id}|") if _in_month(rules, rec, month)
    ]
    receipts.sort(key=lambda r: (r["purchased_at"], r["receipt_id"]))
    return {"customer_id": customer_id, "month": month, "receipts": receipts}


def receipts_month(state: State, rules: Rules, customer_id: str, month: str) -> dict[str, Any]:
    """The customer's own receipt totals of a month, oldest first."""
    totals = [
        {k: v for k, v in rec.items() if k != "card_number"}
        for _k, rec in state.items(f"rt|{customer_id}|")
        if _in_month(rules, rec, month)
    ]
    totals.sort(key=lambda r: (r["purchased_at"], r["receipt_id"]))
    return {
        "customer_id": customer_id,
        "month": month,
        "receipts": totals,
        "total_cents": sum(r["total_cents"] for r in totals),
    }


def household_month(state: State, household_id: str, month: str) -> dict[str, Any]:
    """Everything the ledger holds for a household-month; topologies.access filters it."""
    return {
        "bonus": household_bonus_month(state, household_id, month),
        "receipts": household_bonus.household_receipts(state, household_id, month),
        "members": household_bonus.household_members(state, household_id),
    }


def personal_extract(state: State, rules: Rules, customer_id: str) -> dict[str, Any]:
    """Everything the personal-routing stage holds about one customer (its state partition):
    consent, the card-link history from the card register, receipt totals, product-level
    line items, marketing signals, e-receipts, the recall index entries and the S-mobiili
    counters."""
    totals = [v for _k, v in state.items(f"rt|{customer_id}|")]
    line_items: list[dict[str, Any]] = []
    for _k, rec in state.items(f"pl|{customer_id}|"):
        for line in rec["lines"]:
            line_items.append(
                {
                    "receipt_id": rec["receipt_id"],
                    "purchased_at": rec["purchased_at"],
                    "store_id": rec["store_id"],
                    "chain": rec["chain"],
                    **line,
                }
            )
    signals = [v for _k, v in state.items(f"ms|{customer_id}|")]
    ereceipts = [v["receipt"] for _k, v in state.items(f"er|{customer_id}|")]
    # The recall index is keyed by date; a customer's entries are found through the dates
    # of their receipts (no scan of everyone's index).
    recall = []
    for total in totals:
        day = rules.local_date(total["purchased_at"])
        entry = state.get(recall_key(day, customer_id, total["receipt_id"]))
        if entry is not None:
            recall.append(entry)
    from topologies import counters

    prefix = f"cn|{customer_id}|"
    held_counters = {
        k[len(prefix) :]: {**counters.view(v), "updated_at": v["updated_at"]}
        for k, v in state.items(prefix)
    }
    return {
        "customer_id": customer_id,
        "consent": state.get(consent_rules.key(customer_id)),
        # card, household, role, from, to (None: holds now), as the register has them
        "card_links": register_history(state, customer_id),
        "counters": dict(sorted(held_counters.items())),
        "receipt_totals": sorted(totals, key=lambda r: (r["purchased_at"], r["receipt_id"])),
        "line_items": sorted(
            line_items, key=lambda r: (r["purchased_at"], r["receipt_id"], r["line_no"])
        ),
        "marketing_signals": sorted(signals, key=lambda r: (r["purchased_at"], r["receipt_id"])),
        "e_receipts": sorted(ereceipts, key=lambda r: (r["purchased_at"], r["receipt_id"])),
        "recall_index": sorted(recall, key=lambda r: (r["purchased_at"], r["receipt_id"])),
    }


def membership(state: State, customer_id: str) -> dict[str, Any] | None:
    """The person's household and role in the card register now (None: in none)."""
    now = register_now(state, customer_id)
    if now is None:
        return None
    return {"customer_id": customer_id, "household_id": now["household_id"], "role": now["role"]}


def register_members(state: State, household_id: str) -> dict[str, str]:
    """The household's members now by the card register: customer id -> card role."""
    return household_bonus.register_members(state, household_id)


def counters_month(state: State, customer_id: str, month: str) -> dict[str, Any] | None:
    """The customer's S-mobiili counters for a month (None when nothing was counted)."""
    from topologies import counters

    held = state.get(f"cn|{customer_id}|{month}")
    if held is None:
        return None
    return {"customer_id": customer_id, "month": month, **counters.view(held)}
