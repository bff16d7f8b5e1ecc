"""The demo's live line counts line items once, not once per purpose (stream/local/demo.py)."""

from __future__ import annotations

from stream.local.demo import routing_summary

METRIC = "purchase_stream_line_items_routed_total"


def sample(purpose: str, decision: str, value: float) -> tuple[tuple[str, tuple], float]:
    return (METRIC, (("decision", decision), ("purpose", purpose))), value


def test_line_items_are_one_purposes_decisions_and_each_purpose_gets_at_most_them() -> None:
    # 100 line items: 10 anonymous, 90 identified; consent lets 60 to personal, 30 to
    # marketing, 5 to e-receipts; recall takes every identified line item.
    samples = dict(
        [
            sample("personal", "allowed", 60),
            sample("personal", "consent_off", 30),
            sample("personal", "anonymous", 10),
            sample("marketing", "allowed", 30),
            sample("marketing", "consent_off", 55),
            sample("marketing", "consent_unknown", 5),
            sample("marketing", "anonymous", 10),
            sample("ereceipt", "allowed", 5),
            sample("ereceipt", "consent_off", 85),
            sample("ereceipt", "anonymous", 10),
            sample("recall", "allowed", 90),
            sample("recall", "anonymous", 10),
            (("purchase_stream_dead_letters_total", ()), 3),
        ]
    )
    line_items, allowed = routing_summary(samples)
    assert line_items == 100
    assert allowed == {"personal": 60, "marketing": 30, "ereceipt": 5, "recall": 90}
    # the four purposes' refusals together (the old "withheld"): 215, more than the line items
    refused = sum(v for (n, labels), v in samples.items() if n == METRIC) - sum(allowed.values())
    assert refused == 215 and refused > line_items


def test_no_traffic_yet() -> None:
    assert routing_summary({}) == (
        0,
        dict.fromkeys(("personal", "marketing", "ereceipt", "recall"), 0),
    )
