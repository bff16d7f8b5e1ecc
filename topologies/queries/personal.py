"""Read queries over the personal-routing stage's state (stage 2, keyed by customer id)."""

from __future__ import annotations

from typing import Any

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
