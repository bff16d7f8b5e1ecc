"""The register extract (rekisteriote): everything the stores hold about one customer, as JSON.

Reads the state directory that ``replay`` leaves (one RocksDB database per stage). Line
items are flattened with their receipt id so a person can see each product they bought.
``counters`` holds the S-mobiili counters by Helsinki month ``YYYY-MM``: the sums and shares
of :func:`topologies.counters.view` and ``updated_at``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream.engine.state import RocksState
from topologies.card_join import STAGE as CARD_STAGE
from topologies.personal_routing import STAGE as PERSONAL_STAGE
from topologies.queries.personal import personal_extract
from topologies.rules import Rules


class ExtractError(ValueError):
    pass


def extract(state_dir: str | Path, customer_id: str, rules: Rules) -> dict[str, Any]:
    root = Path(state_dir)
    if not (root / PERSONAL_STAGE).is_dir() or not (root / CARD_STAGE).is_dir():
        raise ExtractError(f"{root} is not a state directory written by `purchase-stream replay`")
    if "|" in customer_id:
        raise ExtractError("customer id must not contain '|'")
    personal = RocksState(root / PERSONAL_STAGE, read_only=True)
    try:
        held = personal_extract(personal, rules, customer_id)
    finally:
        personal.close()
    # The cards linked to the person now; "card_links" has the whole history.
    cards = [link for link in held["card_links"] if link["to"] is None]
    return {"customer_id": customer_id, "consent": held["consent"], "cards": cards, **held}
