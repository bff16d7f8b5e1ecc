"""Read queries over the household Bonus stage's state (stage 4, keyed by household id)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from topologies.bonus_ledger import new_tally, tally_key
from topologies.state import State


def query(state: State, household_id: str, month: str) -> dict[str, Any] | None:
    """A household-month as JSON for the CLI and the HTTP API; None if it has no receipt."""
    if "|" in household_id or "|" in month:
        return None
    tally = state.get(tally_key(household_id, month))
    if tally is None:
        return None
    statements = [s for _, s in state.items(f"stmt|{household_id}|{month}|")]
    return _answer(household_id, month, tally, statements)


def household_bonus_month(state: State, household_id: str, month: str) -> dict[str, Any]:
    """The household's Bonus figures for a month; all zero when it has no receipt yet."""
    found = query(state, household_id, month)
    if found is not None:
        return found
    return _answer(household_id, month, new_tally(household_id, month), [])


def household_month(state: State, household_id: str, month: str) -> dict[str, Any]:
    """Everything the ledger holds for a household-month; topologies.access filters it."""
    return {
        "bonus": household_bonus_month(state, household_id, month),
        "receipts": household_receipts(state, household_id, month),
        "members": household_members(state, household_id),
    }


def _answer(
    household_id: str, month: str, tally: Mapping[str, Any], statements: list[Any]
) -> dict[str, Any]:
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


def register_members(state: State, household_id: str) -> dict[str, str]:
    """Customer id -> role (MAIN_MEMBER / MEMBER) of the household's members now."""
    if "|" in household_id:
        return {}
    best: dict[str, tuple[int, str]] = {}
    for k, v in state.items(f"hreg|{household_id}|"):
        cid = k.split("|")[2]
        if cid not in best or v["from"] > best[cid][0]:
            best[cid] = (v["from"], v["role"])
    return {cid: role for cid, (_, role) in sorted(best.items())}


def household_members(state: State, household_id: str) -> dict[str, str]:
    """Customer id -> card role (MAIN_MEMBER / MEMBER) of the household's members seen so far."""
    if "|" in household_id:
        return {}
    prefix = f"mem|{household_id}|"
    return {k[len(prefix) :]: v["role"] for k, v in state.items(prefix)}
