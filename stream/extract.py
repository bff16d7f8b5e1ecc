"""The register extract (rekisteriote): everything the stores hold about one customer, as JSON.

Reads the state directory that ``replay`` leaves (one RocksDB database per stage). Line
items are flattened with their receipt id so a person can see each product they bought.
``counters`` holds the S-mobiili counters by Helsinki month ``YYYY-MM``: the sums and shares
of :func:`topologies.counters.view` and ``updated_at``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream.state import RocksState
from topologies import consent as consent_rules
from topologies import counters as counter_rules
from topologies.card_join import STAGE as CARD_STAGE
from topologies.personal_routing import STAGE as PERSONAL_STAGE


class ExtractError(ValueError):
    pass


def extract(state_dir: str | Path, customer_id: str) -> dict[str, Any]:
    root = Path(state_dir)
    if not (root / PERSONAL_STAGE).is_dir() or not (root / CARD_STAGE).is_dir():
        raise ExtractError(f"{root} is not a state directory written by `purchase-stream replay`")
    if "|" in customer_id:
        raise ExtractError("customer id must not contain '|'")
    personal = RocksState(root / PERSONAL_STAGE)
    cards_state = RocksState(root / CARD_STAGE)
    try:
        consent = personal.get(consent_rules.key(customer_id))
        cards = [
            link
            for _k, link in cards_state.items("card|")
            if not link.get("closed") and link.get("customer_id") == customer_id
        ]
        totals = [v for _k, v in personal.items(f"rt|{customer_id}|")]
        line_items: list[dict[str, Any]] = []
        for _k, rec in personal.items(f"pl|{customer_id}|"):
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
        prefix = f"cn|{customer_id}|"
        counters = {
            k[len(prefix) :]: {**counter_rules.view(v), "updated_at": v["updated_at"]}
            for k, v in personal.items(prefix)
        }
        signals = [v for _k, v in personal.items(f"ms|{customer_id}|")]
        ereceipts = [v["receipt"] for _k, v in personal.items(f"er|{customer_id}|")]
        recall = [v for _k, v in personal.items("rc|") if v["customer_id"] == customer_id]
    finally:
        personal.close()
        cards_state.close()
    return {
        "customer_id": customer_id,
        "consent": consent,
        "cards": cards,
        "receipt_totals": sorted(totals, key=lambda r: (r["purchased_at"], r["receipt_id"])),
        "line_items": sorted(
            line_items, key=lambda r: (r["purchased_at"], r["receipt_id"], r["line_no"])
        ),
        "counters": dict(sorted(counters.items())),
        "marketing_signals": sorted(signals, key=lambda r: (r["purchased_at"], r["receipt_id"])),
        "e_receipts": sorted(ereceipts, key=lambda r: (r["purchased_at"], r["receipt_id"])),
        "recall_index": sorted(recall, key=lambda r: (r["purchased_at"], r["receipt_id"])),
    }
