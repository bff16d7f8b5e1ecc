"""Read queries over the personal-routing stage's state (stage 2, keyed by customer id)."""

from __future__ import annotations

from typing import Any

from topologies import consent as consent_rules
from topologies import counters
from topologies.personal_stores import (
    COUNTERS,
    ERECEIPTS,
    LINE_ITEMS,
    RECEIPT_TOTALS,
    SIGNALS,
    counter_key,
    customer_prefix,
    recall_key,
)
from topologies.rules import Rules
from topologies.state import State


def register_history(state: State, customer_id: str) -> list[dict[str, Any]]:
    """The person's card links: card, household, role, from, to (None: holds now)."""
    out: list[dict[str, Any]] = []
    for k, periods in state.items(f"reg|{customer_id}|"):
        card = k.rsplit("|", 1)[1]
        out.extend({"card_number": card, **p} for p in periods)
    return sorted(out, key=lambda p: (p["from"], p["card_number"]))


def register_now(state: State, customer_id: str) -> dict[str, Any] | None:
    """The person's household and role in the register now (the latest current link)."""
    current = [p for p in register_history(state, customer_id) if p["to"] is None]
    return current[-1] if current else None


def membership(state: State, customer_id: str) -> dict[str, Any] | None:
    """The person's household and role in the card register now (None: in none)."""
    now = register_now(state, customer_id)
    if now is None:
        return None
    return {"customer_id": customer_id, "household_id": now["household_id"], "role": now["role"]}


def _in_month(rules: Rules, record: dict[str, Any], month: str) -> bool:
    return rules.local_month(record["purchased_at"]) == month


def purchases_month(state: State, rules: Rules, customer_id: str, month: str) -> dict[str, Any]:
    """The customer's product-level purchases of a month (the personal store), oldest first."""
    receipts = [
        rec
        for _k, rec in state.items(customer_prefix(LINE_ITEMS, customer_id))
        if _in_month(rules, rec, month)
    ]
    receipts.sort(key=lambda r: (r["purchased_at"], r["receipt_id"]))
    return {"customer_id": customer_id, "month": month, "receipts": receipts}


def receipts_month(state: State, rules: Rules, customer_id: str, month: str) -> dict[str, Any]:
    """The customer's own receipt totals of a month, oldest first."""
    totals = [
        {k: v for k, v in rec.items() if k != "card_number"}
        for _k, rec in state.items(customer_prefix(RECEIPT_TOTALS, customer_id))
        if _in_month(rules, rec, month)
    ]
    totals.sort(key=lambda r: (r["purchased_at"], r["receipt_id"]))
    return {
        "customer_id": customer_id,
        "month": month,
        "receipts": totals,
        "total_cents": sum(r["total_cents"] for r in totals),
    }


def counters_month(state: State, customer_id: str, month: str) -> dict[str, Any] | None:
    """The customer's S-mobiili counters for a month (None when nothing was counted)."""
    held = state.get(counter_key(customer_id, month))
    if held is None:
        return None
    return {"customer_id": customer_id, "month": month, **counters.view(held)}


def personal_extract(state: State, rules: Rules, customer_id: str) -> dict[str, Any]:
    """Everything the personal-routing stage holds about one customer (its state partition).

    Consent, the card-link history from the card register, receipt totals, product-level
    line items, marketing signals, e-receipts, the recall index entries and the S-mobiili
    counters.
    """
    totals = [v for _k, v in state.items(customer_prefix(RECEIPT_TOTALS, customer_id))]
    line_items: list[dict[str, Any]] = []
    for _k, rec in state.items(customer_prefix(LINE_ITEMS, customer_id)):
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
    signals = [v for _k, v in state.items(customer_prefix(SIGNALS, customer_id))]
    ereceipts = [v["receipt"] for _k, v in state.items(customer_prefix(ERECEIPTS, customer_id))]
    # The recall index is keyed by date; a customer's entries are found through the dates
    # of their receipts (no scan of everyone's index).
    recall = []
    for total in totals:
        day = rules.local_date(total["purchased_at"])
        entry = state.get(recall_key(day, customer_id, total["receipt_id"]))
        if entry is not None:
            recall.append(entry)
    prefix = customer_prefix(COUNTERS, customer_id)
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
