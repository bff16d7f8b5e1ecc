"""Read-side queries shared by the CLI (on replay state) and the worker's HTTP API (on tables).

One function per question, over a :class:`topologies.state.State`, so the access rules of a
later API layer wrap these calls instead of re-implementing them.
"""

from __future__ import annotations

from typing import Any

from topologies import household_bonus
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
