"""Stage 2 (personal routing): which store each identified receipt goes to, by chain and consent.

Spec: docs/domain.md §3.2-3.7 and §2 (fail closed: unknown consent = every flag off; unknown chain =
total only). Keys of the stores: ``rt|`` totals, ``pl|`` product level, ``ms|`` marketing,
``er|`` e-receipts, ``rc|`` recall index, ``consent|``.
"""

from __future__ import annotations

import copy
import itertools

import pytest

from tests.unit.topo_helpers import (
    DAY_MS,
    GTIN_APPLE,
    GTIN_BEER,
    GTIN_MILK,
    HOUR_MS,
    T0,
    card,
    consent,
    emits,
    identified,
    line,
    receipt,
    run,
    stored,
    utc_ms,
)
from topologies import counters, personal_routing
from topologies.context import no_catalog
from topologies.records import Emit
from topologies.state import MemoryState

CID = "CUST-0001"
OKEY = "CUST-0001/R-0001"
RC_KEY = "rc|2024-03-05|CUST-0001|R-0001"

DEFAULT_GROUPS = [
    {"product_group": "ALCOHOL", "amount_cents": 399, "quantity_milli": 1000, "line_count": 1},
    {"product_group": "DAIRY", "amount_cents": 189, "quantity_milli": 1000, "line_count": 1},
    {"product_group": "FRUIT", "amount_cents": 245, "quantity_milli": 850, "line_count": 1},
]


def set_consent(state: MemoryState, record: dict, now: int = T0 - DAY_MS) -> None:
    result = run(personal_routing, state, "customer.consents", record["customer_id"], record, now)
    assert result.rejects == []


def route(state: MemoryState, r: dict | None = None, c: dict | None = None, now: int = T0 + 1):
    r = receipt() if r is None else r
    c = card() if c is None else c
    return run(
        personal_routing, state, "receipts.identified", c["customer_id"], identified(r, c), now
    )


def expected_total(r: dict, c: dict | None = None) -> dict:
    c = card() if c is None else c
    return {
        "receipt_id": r["receipt_id"],
        "card_number": c["card_number"],
        "customer_id": c["customer_id"],
        "household_id": c["household_id"],
        "role": c["role"],
        "store_id": r["store_id"],
        "chain": r["chain"],
        "purchased_at": r["purchased_at"],
        "total_cents": r["total_cents"],
        "bonus_eligible_cents": r["bonus_eligible_cents"],
        "payment_method": r["payment_method"],
        "original_receipt_id": r["original_receipt_id"],
    }


def expected_personal(r: dict) -> dict:
    groups = {GTIN_MILK: "DAIRY", GTIN_APPLE: "FRUIT", GTIN_BEER: "ALCOHOL"}
    return {
        "customer_id": CID,
        "receipt_id": r["receipt_id"],
        "store_id": r["store_id"],
        "chain": r["chain"],
        "purchased_at": r["purchased_at"],
        "lines": [{**x, "product_group": groups[x["gtin"]]} for x in r["lines"]],
    }


def expected_signal(r: dict, month: str = "2024-03") -> dict:
    return {
        "customer_id": CID,
        "receipt_id": r["receipt_id"],
        "purchased_at": r["purchased_at"],
        "month": month,
        "groups": DEFAULT_GROUPS,
    }


# The S-mobiili counters of the default receipt (milk 1 piece of 1030 g, Finnish raw, 1.2 kg
# CO2e/kg; 850 g of foreign apples, 0.7; beer is not food): see test_counters.py for formulas.
DEFAULT_COUNTER = {
    "food_cents": 434,
    "finnish_raw_cents": 189,
    "finnish_made_cents": 0,
    "foreign_cents": 245,
    "unknown_origin_cents": 0,
    "food_grams": 1880,
    "vegetable_grams": 850,
    "co2e_grams": 1236 + 595,
    "unknown_gtin_lines": 0,
    "line_count": 3,
    "receipt_count": 1,
}


def expected_counters(month: str = "2024-03", updated_at: int = T0 + 1, **sums: int) -> dict:
    """A ``smobiili.counters`` record; ``sums`` override the default receipt's figures."""
    return counters.record(CID, month, {**DEFAULT_COUNTER, **sums, "updated_at": updated_at})


def expected_recall(r: dict) -> dict:
    return {
        "card_number": "CARD-0001",
        "customer_id": CID,
        "receipt_id": r["receipt_id"],
        "purchased_at": r["purchased_at"],
        "gtins": sorted({x["gtin"] for x in r["lines"]}),
    }


def data_keys(state: MemoryState) -> set[str]:
    """The stores' keys (not the consent, the retention index or bookkeeping)."""
    return {k for k in state.data if not k.startswith(("consent|", "exp|", "meta|"))}


# --- total record ------------------------------------------------------------------------


def test_total_record_always_for_known_card_even_with_unknown_consent() -> None:
    state = MemoryState()
    r = receipt()
    c = card(role="MEMBER", household_id="HH-0777")
    result = route(state, r, c)
    assert result.rejects == []
    assert emits(result, "receipts.totals") == [
        Emit("receipts.totals", "HH-0777", expected_total(r, c))
    ]
    assert stored(state, "rt|") == {"rt|CUST-0001|R-0001": expected_total(r, c)}


def test_total_record_field_values() -> None:
    state = MemoryState()
    r = receipt(
        "R-0500",
        store_id="STORE-77",
        chain="PRISMA",
        purchased_at=T0 - 5 * HOUR_MS,
        payment_method="CASH",
    )
    result = route(state, r)
    (emit,) = emits(result, "receipts.totals")
    assert emit.key == "HH-0001"
    assert emit.value == {
        "receipt_id": "R-0500",
        "card_number": "CARD-0001",
        "customer_id": "CUST-0001",
        "household_id": "HH-0001",
        "role": "MAIN_MEMBER",
        "store_id": "STORE-77",
        "chain": "PRISMA",
        "purchased_at": T0 - 5 * HOUR_MS,
        "total_cents": 833,
        "bonus_eligible_cents": 434,
        "payment_method": "CASH",
        "original_receipt_id": None,
    }


def test_total_record_for_return_keeps_negative_amounts_and_original() -> None:
    state = MemoryState()
    r = receipt("R-RET", lines=[line(1, GTIN_MILK, -189)], original_receipt_id="R-0001")
    result = route(state, r)
    (emit,) = emits(result, "receipts.totals")
    assert emit.value["total_cents"] == -189
    assert emit.value["bonus_eligible_cents"] == -189
    assert emit.value["original_receipt_id"] == "R-0001"


@pytest.mark.parametrize("chain", ["HOTEL", "PARTNER", "UNKNOWN_CHAIN"])
def test_total_record_at_total_only_chain(chain: str) -> None:
    state = MemoryState()
    set_consent(state, consent(**{"product_level_services": True}))
    r = receipt(chain=chain, lines=[], total_cents=12_345, bonus_eligible_cents=10_000)
    result = route(state, r)
    assert [e.topic for e in result.emits] == ["receipts.totals"]
    assert result.emits[0].value == expected_total(r)
    assert data_keys(state) == {"rt|CUST-0001|R-0001"}


# --- consent-gated stores and the recall index ------------------------------------------


@pytest.mark.parametrize("on", list(itertools.product([False, True], repeat=3)))
def test_gated_stores_follow_their_flags_at_product_level_chain(on: tuple[bool, ...]) -> None:
    pls, mt, er = on
    state = MemoryState()
    # The two flags without a store of ours are on: they must not open any store.
    set_consent(
        state,
        consent(
            product_level_services=pls,
            marketing_targeting=mt,
            e_receipts=er,
            external_audiences=True,
            direct_marketing=True,
        ),
    )
    r = receipt()
    result = route(state, r)
    expected_keys = {"rt|CUST-0001|R-0001", RC_KEY}
    expected_emits = [Emit("receipts.totals", "HH-0001", expected_total(r))]
    if pls:
        expected_keys |= {"pl|CUST-0001|R-0001", "cn|CUST-0001|2024-03"}
        expected_emits.append(Emit("personal.line_items", OKEY, expected_personal(r)))
        expected_emits.append(Emit("smobiili.counters", CID, expected_counters()))
    if mt:
        expected_keys.add("ms|CUST-0001|R-0001")
        expected_emits.append(Emit("marketing.signals", OKEY, expected_signal(r)))
    if er:
        expected_keys.add("er|CUST-0001|R-0001")
        expected_emits.append(Emit("ereceipts.archive", OKEY, {"customer_id": CID, "receipt": r}))
    assert data_keys(state) == expected_keys
    assert sorted(result.emits, key=lambda e: e.topic) == sorted(
        expected_emits, key=lambda e: e.topic
    )
    if pls:
        assert state.get("pl|CUST-0001|R-0001") == expected_personal(r)
    if mt:
        assert state.get("ms|CUST-0001|R-0001") == expected_signal(r)
    if er:
        assert state.get("er|CUST-0001|R-0001") == {"customer_id": CID, "receipt": r}
    assert state.get(RC_KEY) == expected_recall(r)


def test_unknown_consent_opens_nothing_but_total_and_recall() -> None:
    state = MemoryState()
    r = receipt()
    result = route(state, r)
    assert data_keys(state) == {"rt|CUST-0001|R-0001", RC_KEY}
    assert [e.topic for e in result.emits] == ["receipts.totals"]
    assert result.routed[("personal", "consent_unknown")] == 3
    assert result.routed[("marketing", "consent_unknown")] == 3
    assert result.routed[("ereceipt", "consent_unknown")] == 3


@pytest.mark.parametrize(
    "flags",
    [
        None,  # unknown consent
        {},  # every flag off
        {"product_level_services": True},
        {"marketing_targeting": True, "e_receipts": True},
        {"external_audiences": True, "direct_marketing": True},
    ],
)
def test_recall_index_for_every_known_card_at_product_level_chain(flags: dict | None) -> None:
    state = MemoryState()
    if flags is not None:
        set_consent(state, consent(**flags))
    r = receipt()
    route(state, r)
    assert stored(state, "rc|") == {RC_KEY: expected_recall(r)}


def test_recall_index_gtins_are_distinct_and_sorted() -> None:
    state = MemoryState()
    lines = [line(1, GTIN_MILK, 100), line(2, GTIN_BEER, 200), line(3, GTIN_MILK, 100)]
    r = receipt(lines=lines)
    route(state, r)
    assert state.get(RC_KEY)["gtins"] == [GTIN_MILK, GTIN_BEER]


def test_recall_index_only_product_identifiers_no_amounts() -> None:
    state = MemoryState()
    route(state)
    assert set(state.get(RC_KEY)) == {
        "card_number",
        "customer_id",
        "receipt_id",
        "purchased_at",
        "gtins",
    }


@pytest.mark.parametrize("chain", ["HOTEL", "RESTAURANT", "NEW_UNLISTED_CHAIN"])
def test_unknown_or_total_only_chain_stores_nothing_product_level(chain: str) -> None:
    # Even if lines reach stage 2 and every flag is on: fail closed, total only.
    state = MemoryState()
    set_consent(
        state,
        consent(product_level_services=True, marketing_targeting=True, e_receipts=True),
    )
    r = receipt(chain=chain)
    assert r["lines"] != []
    result = route(state, r)
    assert data_keys(state) == {"rt|CUST-0001|R-0001", "er|CUST-0001|R-0001"}
    # The e-receipt keeps the receipt (outlet, total) but no line items.
    archived = {"customer_id": CID, "receipt": {**r, "lines": []}}
    assert state.get("er|CUST-0001|R-0001") == archived
    assert sorted((e.topic, e.key) for e in result.emits) == [
        ("ereceipts.archive", OKEY),
        ("receipts.totals", "HH-0001"),
    ]
    assert emits(result, "ereceipts.archive")[0].value == archived
    assert stored(state, "rc|") == {}


def test_only_flags_with_stores_open_them() -> None:
    state = MemoryState()
    set_consent(state, consent(external_audiences=True, direct_marketing=True))
    result = route(state)
    assert data_keys(state) == {"rt|CUST-0001|R-0001", RC_KEY}
    assert [e.topic for e in result.emits] == ["receipts.totals"]


def test_personal_lines_unknown_product_group_without_catalogue() -> None:
    state = MemoryState()
    set_consent(state, consent(product_level_services=True, marketing_targeting=True))
    c = card()
    run(
        personal_routing,
        state,
        "receipts.identified",
        CID,
        identified(receipt(), c),
        T0 + 1,
        catalog=no_catalog,
    )
    assert [x["product_group"] for x in state.get("pl|CUST-0001|R-0001")["lines"]] == [
        "UNKNOWN",
        "UNKNOWN",
        "UNKNOWN",
    ]
    assert state.get("ms|CUST-0001|R-0001")["groups"] == [
        {"product_group": "UNKNOWN", "amount_cents": 833, "quantity_milli": 2850, "line_count": 3}
    ]


def test_marketing_signal_has_nothing_finer_than_product_groups() -> None:
    state = MemoryState()
    set_consent(state, consent(marketing_targeting=True))
    result = route(state)
    (signal,) = emits(result, "marketing.signals")
    text = repr(signal.value)
    for gtin in (GTIN_MILK, GTIN_APPLE, GTIN_BEER):
        assert gtin not in text
    assert "store_id" not in signal.value


def test_personal_store_is_per_purchaser_only() -> None:
    # Two members of one household: each one's product-level data is under their own id.
    state = MemoryState()
    anna = card("CARD-A", "CUST-A", "HH-1", "MAIN_MEMBER")
    bert = card("CARD-B", "CUST-B", "HH-1", "MEMBER")
    for c in (anna, bert):
        set_consent(state, consent(c["customer_id"], product_level_services=True))
    route(state, receipt("R-A"), anna)
    route(state, receipt("R-B"), bert)
    assert sorted(stored(state, "pl|")) == ["pl|CUST-A|R-A", "pl|CUST-B|R-B"]
    assert state.get("pl|CUST-A|R-A")["customer_id"] == "CUST-A"
    assert "household_id" not in state.get("pl|CUST-A|R-A")


# --- Helsinki calendar --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "date", "month"),
    [
        (utc_ms(2024, 1, 31, 21, 59, 59), "2024-01-31", "2024-01"),
        (utc_ms(2024, 1, 31, 22, 0, 0), "2024-02-01", "2024-02"),
        (utc_ms(2024, 6, 30, 20, 59, 59), "2024-06-30", "2024-06"),
        (utc_ms(2024, 6, 30, 21, 0, 0), "2024-07-01", "2024-07"),
        (utc_ms(2024, 6, 30, 22, 30, 0), "2024-07-01", "2024-07"),
    ],
)
def test_recall_date_and_signal_month_are_helsinki_local(at: int, date: str, month: str) -> None:
    state = MemoryState()
    set_consent(state, consent(effective_at=at - DAY_MS, marketing_targeting=True))
    r = receipt(purchased_at=at)
    result = route(state, r, now=at + HOUR_MS)
    assert list(stored(state, "rc|")) == [f"rc|{date}|CUST-0001|R-0001"]
    assert emits(result, "marketing.signals")[0].value["month"] == month


# --- duplicates ---------------------------------------------------------------------------


def test_duplicate_receipt_counted_once_and_reemitted_identically() -> None:
    state = MemoryState()
    set_consent(
        state, consent(product_level_services=True, marketing_targeting=True, e_receipts=True)
    )
    r = receipt()
    first = route(state, r, now=T0 + 1)
    snapshot = copy.deepcopy(state.data)
    second = route(state, r, now=T0 + 2 * DAY_MS)
    assert second.events["duplicate"] == 1
    assert second.events["routed"] == 0
    assert state.data == snapshot
    assert sorted(second.emits, key=lambda e: e.topic) == sorted(first.emits, key=lambda e: e.topic)
    assert len(second.emits) == 5
    assert second.events["counters_updated"] == 0
    assert emits(second, "smobiili.counters") == [
        Emit("smobiili.counters", CID, expected_counters())
    ]


def test_duplicate_does_not_use_consent_given_since() -> None:
    state = MemoryState()
    r = receipt()
    route(state, r, now=T0 + 1)
    snapshot = copy.deepcopy(state.data)
    set_consent(
        state,
        consent(
            version=1,
            effective_at=T0 - DAY_MS,
            product_level_services=True,
            marketing_targeting=True,
            e_receipts=True,
        ),
        now=T0 + HOUR_MS,
    )
    second = route(state, r, now=T0 + 2 * HOUR_MS)
    assert second.events["duplicate"] == 1
    assert [e.topic for e in second.emits] == ["receipts.totals"]
    assert data_keys(state) == {
        k for k in snapshot if not k.startswith(("consent|", "exp|", "meta|"))
    }


def test_duplicate_after_revocation_does_not_bring_back_purged_data() -> None:
    state = MemoryState()
    set_consent(state, consent(product_level_services=True, e_receipts=True))
    r = receipt()
    route(state, r, now=T0 + 1)
    set_consent(state, consent(version=2, effective_at=T0 + HOUR_MS, e_receipts=True))
    second = route(state, r, now=T0 + 2 * HOUR_MS)
    assert second.events["duplicate"] == 1
    assert sorted(e.topic for e in second.emits) == ["ereceipts.archive", "receipts.totals"]
    assert stored(state, "pl|") == {}
