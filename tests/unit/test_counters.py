"""S-mobiili counters: the formulas (pure) and how stage 2 keeps them (docs/domain.md §6, §3).

Spec (the issue): counted only from line items that reached the purchaser's product-level
store, joined with the catalogue as it is when the line is processed; food euro sums by origin
level; food and vegetable grams (``KG`` lines: ``quantity_milli`` grams, ``PCS`` lines:
quantity × ``net_weight_grams``); CO2e grams = grams × factor; unknown GTINs only in
``unknown_gtin_lines``; a later catalogue entry does not rewrite history; revoking
``product_level_services`` removes the counters; counted once however often delivered.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.unit.topo_helpers import (
    DAY_MS,
    DEFAULT_PRODUCTS,
    GTIN_BEER,
    GTIN_MILK,
    HOUR_MS,
    T0,
    card,
    catalog_of,
    consent,
    emits,
    identified,
    line,
    product,
    receipt,
    run,
    stored,
    utc_ms,
)
from topologies import counters, personal_routing
from topologies.context import no_catalog
from topologies.counters import FIELDS, line_contribution, pct, view
from topologies.records import Emit
from topologies.state import MemoryState

CID = "CUST-0001"
GTIN_X = "6400000000999"  # a product the catalogue learns only later


def contribution(prod: dict[str, Any] | None, ln: dict[str, Any]) -> dict[str, int]:
    """The line's contribution with every field spelled out (0 where it adds nothing)."""
    return {name: 0 for name in FIELDS if name != "receipt_count"} | line_contribution(prod, ln)


def sums(**fields: int) -> dict[str, int]:
    return {name: 0 for name in FIELDS if name != "receipt_count"} | fields


# --- one line ----------------------------------------------------------------------------


def test_weighed_kg_line_grams_are_quantity_milli() -> None:
    tomato = product("T", "VEGETABLES", vegetable=True, origin="FINNISH_RAW", co2e_kg_per_kg=1.2)
    got = contribution(tomato, line(1, "T", 412, unit="KG", quantity_milli=734))
    assert got == sums(
        line_count=1,
        food_cents=412,
        finnish_raw_cents=412,
        food_grams=734,
        vegetable_grams=734,
        co2e_grams=881,  # 734 × 1.2 = 880.8
    )


def test_weighed_line_ignores_any_net_weight() -> None:
    cheese = product("C", "DAIRY", origin="FOREIGN", net_weight_grams=400)
    got = contribution(cheese, line(1, "C", 950, unit="KG", quantity_milli=315))
    assert got["food_grams"] == 315


def test_packed_pcs_line_grams_are_quantity_times_net_weight() -> None:
    milk = product("M", "DAIRY", origin="FINNISH_MADE", net_weight_grams=1030, co2e_kg_per_kg=1.25)
    got = contribution(milk, line(1, "M", 378, quantity_milli=2000))
    assert got == sums(
        line_count=1,
        food_cents=378,
        finnish_made_cents=378,
        food_grams=2060,
        vegetable_grams=0,
        co2e_grams=2575,  # 2060 × 1.25
    )


def test_pcs_food_without_net_weight_counts_in_euros_only() -> None:
    pastry = product("P", "BREAD", origin="FINNISH_RAW", co2e_kg_per_kg=1.0)
    got = contribution(pastry, line(1, "P", 250, quantity_milli=3000))
    assert got == sums(line_count=1, food_cents=250, finnish_raw_cents=250)


def test_food_without_co2e_factor_has_grams_but_no_co2e() -> None:
    rice = product("R", "DRY_GOODS", origin="FOREIGN", net_weight_grams=1000)
    got = contribution(rice, line(1, "R", 199))
    assert (got["food_grams"], got["co2e_grams"]) == (1000, 0)


def test_non_food_line_counts_in_no_sum() -> None:
    # Even with a weight and a factor: the counters are about food (§6).
    soap = product(
        "S", "HOUSEHOLD", food=False, origin="FINNISH_MADE", net_weight_grams=500, co2e_kg_per_kg=2
    )
    assert contribution(soap, line(1, "S", 399)) == sums(line_count=1)


@pytest.mark.parametrize(
    ("origin", "field"),
    [
        ("FINNISH_RAW", "finnish_raw_cents"),
        ("FINNISH_MADE", "finnish_made_cents"),
        ("FOREIGN", "foreign_cents"),
        ("UNKNOWN", "unknown_origin_cents"),
        ("SOMETHING_NEW", "unknown_origin_cents"),  # a value the code does not know yet
    ],
)
def test_each_origin_level_by_euro_value(origin: str, field: str) -> None:
    got = contribution(product("G", "MEAT", origin=origin), line(1, "G", 1234))
    assert got == sums(line_count=1, food_cents=1234, **{field: 1234})


def test_unknown_gtin_counts_only_as_unknown_line() -> None:
    got = contribution(None, line(1, GTIN_X, 500, unit="KG", quantity_milli=1000))
    assert got == sums(line_count=1, unknown_gtin_lines=1)


def test_domestic_is_never_derived_from_the_gtin_prefix() -> None:
    # 64x means the code was issued in Finland, not that the product is Finnish.
    imported = product("6412345678901", "DRY_GOODS", origin="FOREIGN")
    got = contribution(imported, line(1, "6412345678901", 300))
    assert (got["foreign_cents"], got["finnish_made_cents"], got["finnish_raw_cents"]) == (
        300,
        0,
        0,
    )


def test_vegetable_flag_decides_vegetable_grams() -> None:
    mushrooms = product("MU", "MUSHROOMS", vegetable=True, net_weight_grams=250)
    meat = product("ME", "MEAT", net_weight_grams=400)
    assert contribution(mushrooms, line(1, "MU", 299))["vegetable_grams"] == 250
    assert contribution(meat, line(1, "ME", 599))["vegetable_grams"] == 0


# --- returns and rounding ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("prod", "ln"),
    [
        (
            product("T", "VEGETABLES", vegetable=True, origin="FOREIGN", co2e_kg_per_kg=0.7),
            line(1, "T", 331, unit="KG", quantity_milli=545),
        ),
        (
            product("M", "DAIRY", origin="FINNISH_RAW", net_weight_grams=333, co2e_kg_per_kg=1.15),
            line(1, "M", 250, quantity_milli=1500),  # 499.5 g: rounded per line
        ),
        (product("P", "BREAD", origin="UNKNOWN"), line(1, "P", 129)),
        (None, line(1, GTIN_X, 100)),
    ],
)
def test_a_return_subtracts_exactly_what_the_purchase_added(prod: Any, ln: dict) -> None:
    returned = {**ln, "quantity_milli": -ln["quantity_milli"], "amount_cents": -ln["amount_cents"]}
    bought, back = contribution(prod, ln), contribution(prod, returned)
    counter = counters.add(counters.add(counters.empty(), bought), back)
    for name in bought:  # every field but receipt_count (a line has no receipt)
        if name in ("line_count", "unknown_gtin_lines"):
            # lines processed, never going down
            assert counter[name] == 2 * bought[name], name
        else:
            assert counter[name] == 0, name
            assert back[name] == -bought[name], name


def test_return_alone_makes_a_month_negative() -> None:
    meat = product("ME", "MEAT", origin="FINNISH_RAW", net_weight_grams=400, co2e_kg_per_kg=7.0)
    got = contribution(meat, line(1, "ME", -599, quantity_milli=-1000))
    assert got == sums(
        line_count=1, food_cents=-599, finnish_raw_cents=-599, food_grams=-400, co2e_grams=-2800
    )
    shown = view(counters.add(counters.empty(), got))
    assert shown["domestic_share_pct"] is None  # no food value to share out
    assert shown["vegetable_share_pct"] is None


@pytest.mark.parametrize(
    ("grams", "factor", "co2e"),
    [
        (45, 0.7, 32),  # 31.5 exactly; the float product is 31.499999999999996
        (25, 1.1, 28),  # 27.5; float 27.500000000000004
        (50, 1.15, 58),  # 57.5; float 57.49999999999999
        (1, 0.4, 0),
        (1, 0.5, 1),
        (-45, 0.7, -32),  # half away from zero: a return cancels its purchase
        (-1, 0.5, -1),
        (1000, 26.0, 26_000),
        (0, 3.0, 0),
    ],
)
def test_co2e_rounds_half_away_from_zero_per_line(grams: int, factor: float, co2e: int) -> None:
    assert counters.co2e_grams(grams, factor) == co2e
    f = product("F", "MEAT", co2e_kg_per_kg=factor)
    assert contribution(f, line(1, "F", 100, unit="KG", quantity_milli=grams))["co2e_grams"] == co2e


def test_co2e_is_rounded_per_line_not_on_the_month() -> None:
    f = product("F", "FISH", co2e_kg_per_kg=0.5)
    one = contribution(f, line(1, "F", 100, unit="KG", quantity_milli=1))
    counter = counters.add(counters.add(counters.empty(), one), one)
    assert counter["co2e_grams"] == 2  # 0.5 + 0.5 would be 1 on the sum


@pytest.mark.parametrize(
    ("quantity_milli", "grams"),
    [(1000, 333), (3000, 999), (500, 167), (1500, 500), (-500, -167), (250, 83)],
)
def test_fractional_pieces_round_half_away_from_zero(quantity_milli: int, grams: int) -> None:
    f = product("F", "DAIRY", net_weight_grams=333)
    assert contribution(f, line(1, "F", 100, quantity_milli=quantity_milli))["food_grams"] == grams


# --- the derived percentages -------------------------------------------------------------


@pytest.mark.parametrize(
    ("num", "den", "want"),
    [
        (1, 3, 33.3),
        (2, 3, 66.7),
        (1, 8, 12.5),
        (1, 16, 6.3),  # 6.25: half away from zero, not to even
        (3, 16, 18.8),  # 18.75
        (0, 5, 0.0),
        (5, 5, 100.0),
        (7, 5, 140.0),  # returns can push a share past 100
        (-1, 3, -33.3),
        (1, 0, None),
        (0, 0, None),
        (1, -5, None),
    ],
)
def test_pct(num: int, den: int, want: float | None) -> None:
    assert pct(num, den) == want


def test_view_shares_and_zero_denominators() -> None:
    counter = counters.empty() | {
        "food_cents": 1000,
        "finnish_raw_cents": 400,
        "finnish_made_cents": 250,
        "foreign_cents": 300,
        "unknown_origin_cents": 50,
        "food_grams": 3000,
        "vegetable_grams": 1000,
        "last_receipt_id": "R-9",
        "updated_at": T0,
    }
    shown = view(counter)
    assert list(shown) == [*FIELDS, *counters.PERCENTAGES]
    assert "last_receipt_id" not in shown and "updated_at" not in shown
    assert {k: shown[k] for k in counters.PERCENTAGES} == {
        "domestic_share_pct": 65.0,
        "finnish_raw_share_pct": 40.0,
        "finnish_made_share_pct": 25.0,
        "foreign_share_pct": 30.0,
        "unknown_origin_share_pct": 5.0,
        "vegetable_share_pct": 33.3,
    }
    nothing = view(counters.empty())
    assert all(nothing[k] is None for k in counters.PERCENTAGES)
    assert all(nothing[k] == 0 for k in FIELDS)
    # food by value but no weight (pieces without net weight): shares by value only
    only_value = view(counters.empty() | {"food_cents": 200, "foreign_cents": 200})
    assert (only_value["foreign_share_pct"], only_value["vegetable_share_pct"]) == (100.0, None)


def test_removal_record_says_removed_with_nothing_left() -> None:
    rec = counters.removal_record(CID, "2024-03", T0)
    assert rec["removed"] is True and rec["updated_at"] == T0
    assert all(rec[k] == 0 for k in FIELDS)
    assert all(rec[k] is None for k in counters.PERCENTAGES)


# --- stage 2: where the counters come from ----------------------------------------------


def give(state: MemoryState, record: dict | None, now: int, key: str = CID):
    result = run(personal_routing, state, "customer.consents", key, record, now)
    assert result.rejects == []
    return result


def route(
    state: MemoryState,
    r: dict,
    now: int,
    catalog: dict[str, dict] | None = None,
    c: dict | None = None,
):
    c = card() if c is None else c
    return run(
        personal_routing,
        state,
        "receipts.identified",
        c["customer_id"],
        identified(r, c),
        now,
        catalog=None if catalog is None else catalog_of(catalog),
    )


def counter(state: MemoryState, month: str = "2024-03", cid: str = CID) -> dict | None:
    value = state.get(f"cn|{cid}|{month}")
    return None if value is None else view(value)


def pls_on(state: MemoryState, at: int = T0 - DAY_MS, cid: str = CID, **more: bool) -> None:
    give(state, consent(cid, effective_at=at, product_level_services=True, **more), at, key=cid)


def test_default_receipt_counter_and_record() -> None:
    state = MemoryState()
    pls_on(state)
    result = route(state, receipt(), T0 + 1)
    want = {
        "food_cents": 434,
        "finnish_raw_cents": 189,
        "finnish_made_cents": 0,
        "foreign_cents": 245,
        "unknown_origin_cents": 0,
        "food_grams": 1030 + 850,
        "vegetable_grams": 850,
        "co2e_grams": 1236 + 595,
        "unknown_gtin_lines": 0,
        "line_count": 3,
        "receipt_count": 1,
    }
    assert state.get("cn|CUST-0001|2024-03") == {
        **want,
        "last_receipt_id": "R-0001",
        "updated_at": T0 + 1,
    }
    assert emits(result, "smobiili.counters") == [
        Emit(
            "smobiili.counters",
            CID,
            {
                "customer_id": CID,
                "month": "2024-03",
                "removed": False,
                **want,
                "domestic_share_pct": 43.5,  # 189 / 434
                "finnish_raw_share_pct": 43.5,
                "finnish_made_share_pct": 0.0,
                "foreign_share_pct": 56.5,
                "unknown_origin_share_pct": 0.0,
                "vegetable_share_pct": 45.2,  # 850 / 1880
                "updated_at": T0 + 1,
            },
        )
    ]
    assert result.events["counters_updated"] == 1


@pytest.mark.parametrize(
    "flags",
    [
        None,  # consent unknown: fail closed
        {},
        {"marketing_targeting": True, "e_receipts": True},
        {"external_audiences": True, "direct_marketing": True},
    ],
)
def test_no_counters_without_product_level_services(flags: dict | None) -> None:
    state = MemoryState()
    if flags is not None:
        give(state, consent(effective_at=T0 - DAY_MS, **flags), T0 - DAY_MS)
    result = route(state, receipt(), T0 + 1)
    assert stored(state, "cn|") == {}
    assert emits(result, "smobiili.counters") == []
    assert result.events["counters_updated"] == 0


def test_no_counters_for_a_purchase_before_the_opt_in() -> None:
    state = MemoryState()
    pls_on(state, at=T0 + HOUR_MS)
    route(state, receipt(purchased_at=T0), T0 + 2 * HOUR_MS)
    assert stored(state, "cn|") == {}


@pytest.mark.parametrize("chain", ["HOTEL", "RESTAURANT", "NEW_UNLISTED_CHAIN"])
def test_no_counters_at_total_only_chains(chain: str) -> None:
    state = MemoryState()
    pls_on(state)
    result = route(state, receipt(chain=chain), T0 + 1)
    assert stored(state, "cn|") == {}
    assert emits(result, "smobiili.counters") == []


def test_receipts_of_a_month_add_up_and_months_are_helsinki_local() -> None:
    state = MemoryState()
    pls_on(state, at=utc_ms(2024, 1, 1))
    jan_last = utc_ms(2024, 1, 31, 21, 59, 59)  # 23:59:59 in Helsinki
    feb_first = utc_ms(2024, 1, 31, 22, 0, 0)  # 00:00 on 1 February in Helsinki
    route(state, receipt("R-1", purchased_at=jan_last), feb_first + HOUR_MS)
    route(state, receipt("R-2", purchased_at=feb_first), feb_first + HOUR_MS)
    r3 = route(state, receipt("R-3", purchased_at=feb_first + DAY_MS), feb_first + 2 * DAY_MS)
    assert sorted(stored(state, "cn|")) == ["cn|CUST-0001|2024-01", "cn|CUST-0001|2024-02"]
    jan, feb = counter(state, "2024-01"), counter(state, "2024-02")
    assert jan is not None and feb is not None
    assert (jan["receipt_count"], jan["food_cents"]) == (1, 434)
    assert (feb["receipt_count"], feb["food_cents"], feb["line_count"]) == (2, 868, 6)
    (emit,) = emits(r3, "smobiili.counters")
    assert (emit.key, emit.value["month"], emit.value["receipt_count"]) == (CID, "2024-02", 2)


def test_counters_are_per_purchaser() -> None:
    state = MemoryState()
    anna = card("CARD-A", "CUST-A", "HH-1", "MAIN_MEMBER")
    bert = card("CARD-B", "CUST-B", "HH-1", "MEMBER")
    pls_on(state, cid="CUST-A")
    route(state, receipt("R-A"), T0 + 1, c=anna)
    route(state, receipt("R-B"), T0 + 1, c=bert)  # Bert never opted in
    assert sorted(stored(state, "cn|")) == ["cn|CUST-A|2024-03"]


def test_return_in_a_later_month_subtracts_there() -> None:
    state = MemoryState()
    pls_on(state)
    route(state, receipt("R-1"), T0 + 1)
    april = utc_ms(2024, 4, 2, 10)
    milk_back = [line(1, GTIN_MILK, -189, quantity_milli=-1000)]
    route(
        state,
        receipt("R-RET", purchased_at=april, lines=milk_back, original_receipt_id="R-1"),
        april + 1,
    )
    march, apr = counter(state, "2024-03"), counter(state, "2024-04")
    assert march is not None and march["food_cents"] == 434  # history stays
    assert apr is not None
    assert (apr["food_cents"], apr["finnish_raw_cents"], apr["food_grams"], apr["co2e_grams"]) == (
        -189,
        -189,
        -1030,
        -1236,
    )
    assert (apr["receipt_count"], apr["line_count"]) == (1, 1)
    assert apr["domestic_share_pct"] is None


def test_return_in_the_same_month_cancels_the_sums() -> None:
    state = MemoryState()
    pls_on(state)
    r = receipt("R-1")
    route(state, r, T0 + 1)
    back = [
        {**x, "quantity_milli": -x["quantity_milli"], "amount_cents": -x["amount_cents"]}
        for x in r["lines"]
    ]
    route(
        state,
        receipt("R-RET", purchased_at=T0 + HOUR_MS, lines=back, original_receipt_id="R-1"),
        T0 + HOUR_MS + 1,
    )
    got = counter(state)
    assert got is not None
    assert all(got[k] == 0 for k in FIELDS if k not in ("line_count", "receipt_count"))
    assert (got["line_count"], got["receipt_count"]) == (6, 2)


def test_unknown_gtin_then_catalogue_arrives_later() -> None:
    state = MemoryState()
    pls_on(state, at=utc_ms(2024, 2, 1))
    x_line = [line(1, GTIN_X, 500, unit="KG", quantity_milli=1000)]
    feb = utc_ms(2024, 2, 20, 10)
    route(state, receipt("R-FEB", purchased_at=feb, lines=x_line), feb + 1, catalog={})
    before = counter(state, "2024-02")
    assert before is not None
    assert before == view(
        counters.empty() | {"unknown_gtin_lines": 1, "line_count": 1, "receipt_count": 1}
    )
    # The catalogue learns the product: February is not rewritten ...
    known = {
        GTIN_X: product(
            GTIN_X, "VEGETABLES", vegetable=True, origin="FINNISH_RAW", co2e_kg_per_kg=0.5
        )
    }
    snapshot = copy.deepcopy(state.data)
    r2 = route(state, receipt("R-MAR", purchased_at=T0, lines=x_line), T0 + 1, catalog=known)
    assert state.get("cn|CUST-0001|2024-02") == snapshot["cn|CUST-0001|2024-02"]
    assert [e.value["month"] for e in emits(r2, "smobiili.counters")] == ["2024-03"]
    # ... and applies to later receipts.
    after = counter(state, "2024-03")
    assert after is not None
    assert (after["food_cents"], after["finnish_raw_cents"], after["vegetable_grams"]) == (
        500,
        500,
        1000,
    )
    assert (after["co2e_grams"], after["unknown_gtin_lines"]) == (500, 0)
    # Even a later receipt of the *same* month keeps the earlier line as it was counted.
    route(
        state, receipt("R-FEB-2", purchased_at=feb + HOUR_MS, lines=x_line), T0 + 2, catalog=known
    )
    feb_now = counter(state, "2024-02")
    assert feb_now is not None
    assert (feb_now["unknown_gtin_lines"], feb_now["food_cents"], feb_now["line_count"]) == (
        1,
        500,
        2,
    )


def test_catalogue_change_later_does_not_move_counted_lines() -> None:
    state = MemoryState()
    pls_on(state)
    route(state, receipt(), T0 + 1)
    counted = copy.deepcopy(state.get("cn|CUST-0001|2024-03"))
    changed = copy.deepcopy(DEFAULT_PRODUCTS)
    changed[GTIN_MILK]["origin"] = "FOREIGN"
    changed[GTIN_BEER]["food"] = True
    # A redelivery after the change: counted once, with the contribution of the first time.
    again = route(state, receipt(), T0 + DAY_MS, catalog=changed)
    assert again.events["duplicate"] == 1
    assert state.get("cn|CUST-0001|2024-03") == counted
    assert [e.value["finnish_raw_cents"] for e in emits(again, "smobiili.counters")] == [189]


def test_line_of_unknown_gtin_without_catalogue_at_all() -> None:
    state = MemoryState()
    pls_on(state)
    run(
        personal_routing,
        state,
        "receipts.identified",
        CID,
        identified(receipt(), card()),
        T0 + 1,
        catalog=no_catalog,
    )
    got = counter(state)
    assert got is not None
    assert (got["unknown_gtin_lines"], got["line_count"], got["food_cents"]) == (3, 3, 0)


# --- exactly once ------------------------------------------------------------------------


def test_redelivery_does_not_count_twice_and_resends_the_current_month() -> None:
    state = MemoryState()
    pls_on(state)
    first = route(state, receipt("R-1"), T0 + 1)
    route(state, receipt("R-2", purchased_at=T0 + 5), T0 + 6)
    snapshot = copy.deepcopy(state.data)
    again = route(state, receipt("R-1"), T0 + DAY_MS)
    assert state.data == snapshot
    assert again.events["counters_updated"] == 0
    (emit,) = emits(again, "smobiili.counters")
    # The month as it is now (both receipts), stamped with its last change.
    assert emit.value["receipt_count"] == 2
    assert emit.value["updated_at"] == T0 + 6
    assert emits(first, "smobiili.counters")[0].value["receipt_count"] == 1


def test_redelivery_of_a_receipt_that_was_not_counted_sends_no_counters() -> None:
    state = MemoryState()
    route(state, receipt(), T0 + 1)  # no consent
    pls_on(state, at=T0 - DAY_MS)  # consent given later (backdated): not retroactive
    again = route(state, receipt(), T0 + DAY_MS)
    assert again.events["duplicate"] == 1
    assert emits(again, "smobiili.counters") == []


def after_prefix(base: MemoryState, writes: list[tuple[str, str, Any]]) -> MemoryState:
    """``base`` with the first writes of a step applied: what a crash leaves behind."""
    state = MemoryState()
    state.data = copy.deepcopy(base.data)
    for op, key, value in writes:
        if op == "set":
            state.set(key, value)
        else:
            state.delete(key)
    return state


class Recording(MemoryState):
    """A MemoryState that logs every write, to cut a step short as a crash would."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str, Any]] = []

    def set(self, key: str, value: Any) -> None:
        self.log.append(("set", key, copy.deepcopy(value)))
        super().set(key, value)

    def delete(self, key: str) -> None:
        self.log.append(("del", key, None))
        super().delete(key)


def test_a_crash_after_any_prefix_of_the_writes_counts_the_receipt_once() -> None:
    # The changelog keeps a prefix of a step's writes; the receipt is then delivered again.
    base = MemoryState()
    pls_on(base, marketing_targeting=True, e_receipts=True)
    route(base, receipt("R-0"), T0)
    rec = Recording()
    rec.data = copy.deepcopy(base.data)
    route(rec, receipt("R-1", purchased_at=T0 + 5), T0 + 6)
    want = copy.deepcopy(rec.data)
    writes = rec.log
    # (R-0 already set the retention index's low date, so R-1 writes only its exp| entry.)
    assert [k.split("|")[0] for _op, k, _v in writes] == [
        "pl", "cn", "ms", "er", "rc", "exp", "rt"
    ]  # fmt: skip
    for kept in range(len(writes) + 1):
        state = after_prefix(base, writes[:kept])
        route(state, receipt("R-1", purchased_at=T0 + 5), T0 + 6)
        assert state.get("cn|CUST-0001|2024-03") == want["cn|CUST-0001|2024-03"], kept
        assert state.data == want, kept


# --- deletion ----------------------------------------------------------------------------


def _two_months_and_a_neighbour() -> MemoryState:
    state = MemoryState()
    pls_on(state, at=utc_ms(2024, 2, 1))
    pls_on(state, at=utc_ms(2024, 2, 1), cid="CUST-00010")
    route(state, receipt("R-FEB", purchased_at=utc_ms(2024, 2, 20, 10)), T0)
    route(state, receipt("R-MAR"), T0 + 1)
    route(state, receipt("R-N"), T0 + 1, c=card("CARD-N", "CUST-00010", "HH-N"))
    assert len(stored(state, "cn|")) == 3
    return state


def test_revocation_removes_every_month_and_says_so() -> None:
    state = _two_months_and_a_neighbour()
    neighbour = state.get("cn|CUST-00010|2024-03")
    now = T0 + DAY_MS
    result = give(state, consent(version=2, effective_at=now), now)
    assert stored(state, "cn|") == {"cn|CUST-00010|2024-03": neighbour}
    assert emits(result, "smobiili.counters") == [
        Emit("smobiili.counters", CID, counters.removal_record(CID, month, now))
        for month in ("2024-02", "2024-03")
    ]
    assert result.events["counters_updated"] == 0


def test_revoking_other_flags_keeps_the_counters() -> None:
    state = MemoryState()
    pls_on(state, marketing_targeting=True, e_receipts=True)
    route(state, receipt(), T0 + 1)
    now = T0 + DAY_MS
    result = give(state, consent(version=2, effective_at=now, product_level_services=True), now)
    assert list(stored(state, "cn|")) == ["cn|CUST-0001|2024-03"]
    assert emits(result, "smobiili.counters") == []


def test_after_re_enabling_counters_start_from_zero() -> None:
    state = MemoryState()
    pls_on(state)
    route(state, receipt("R-1"), T0 + 1)
    off, back = T0 + HOUR_MS, T0 + 2 * HOUR_MS
    give(state, consent(version=2, effective_at=off), off)
    give(state, consent(version=3, effective_at=back, product_level_services=True), back)
    route(state, receipt("R-WHILE-OFF", purchased_at=off + 1), back + 1)
    route(state, receipt("R-2", purchased_at=back + 1), back + 2)
    got = counter(state)
    assert got is not None and got["receipt_count"] == 1


def test_erasure_removes_the_counters() -> None:
    state = _two_months_and_a_neighbour()
    now = T0 + DAY_MS
    result = give(state, None, now)
    assert list(stored(state, "cn|")) == ["cn|CUST-00010|2024-03"]
    assert [
        (e.key, e.value["month"], e.value["removed"]) for e in emits(result, "smobiili.counters")
    ] == [
        (CID, "2024-02", True),
        (CID, "2024-03", True),
    ]


def test_a_crash_in_a_revocation_never_leaves_a_closed_store_filled() -> None:
    # Privacy first: cut the revocation after any prefix of its writes and deliver the
    # consent record again; the personal stores and counters end empty either way.
    base = MemoryState()
    pls_on(base, marketing_targeting=True, e_receipts=True)
    route(base, receipt("R-0"), T0)
    route(base, receipt("R-1", purchased_at=T0 + 5), T0 + 6)
    off = consent(CID, version=2, effective_at=T0 + HOUR_MS, product_level_services=False)
    rec = Recording()
    rec.data = copy.deepcopy(base.data)
    give(rec, off, T0 + HOUR_MS, key=CID)
    want = copy.deepcopy(rec.data)
    assert not any(k.startswith(("pl|", "cn|")) for k in want)
    writes = rec.log
    assert writes[-1][1] == f"consent|{CID}"  # the consent is the last write
    for kept in range(len(writes) + 1):
        state = after_prefix(base, writes[:kept])
        give(state, off, T0 + HOUR_MS, key=CID)
        assert state.data == want, kept
