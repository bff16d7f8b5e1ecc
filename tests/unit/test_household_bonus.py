"""Stage 4 (household Bonus): month tallies, tiers, payment benefit, statements, corrections.

Spec: docs/domain.md §4 (the common tier table and its public checks, whole-month rate, rounding
on the month total, payment-method benefit at own chains only, returns, each receipt once,
paid by the 10th of the following month). Times are written in UTC with the Helsinki wall
clock in a comment: winter is UTC+2, summer (last Sunday of March to last Sunday of October)
UTC+3.
"""

from __future__ import annotations

import copy
import io
import random
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest

from stream.serde import schemas
from tests.unit.topo_helpers import DAY_MS, HOUR_MS, RULES, emits, run, utc_ms
from topologies import bonus_ledger as bl
from topologies import bonus_rules as br
from topologies import household_bonus as hb
from topologies.queries import household_bonus as bq
from topologies.records import Emit, StepResult
from topologies.rules import DEFAULT_BONUS_TIERS, Rules
from topologies.state import MemoryState

CONFIG = Path(__file__).resolve().parents[2] / "config" / "pipeline.toml"
OWN = "S_ETUKORTTI_PAYMENT"

# January 2026 (winter): a purchase on the 15th, 12:00 Helsinki; one on 3 February, before
# January closes.
JAN = utc_ms(2026, 1, 15, 10)
FEB = utc_ms(2026, 2, 3, 10)
# January closes on 10 February 00:00 Helsinki (UTC+2) = 9 February 22:00 UTC.
JAN_CLOSE = utc_ms(2026, 2, 9, 22)
FEB_CLOSE = utc_ms(2026, 3, 9, 22)


def total(
    rid: str,
    eligible: int,
    *,
    hh: str = "HH-1",
    cid: str = "CUST-1",
    at: int = JAN,
    chain: str = "S_MARKET",
    payment: str = OWN,
    total_cents: int | None = None,
    original: str | None = None,
) -> dict[str, Any]:
    """A ``receipts.totals`` record (ReceiptTotal)."""
    return {
        "receipt_id": rid,
        "card_number": f"CARD-{cid}",
        "customer_id": cid,
        "household_id": hh,
        "role": "MAIN_MEMBER",
        "store_id": "STORE-01",
        "chain": chain,
        "purchased_at": at,
        "total_cents": eligible if total_cents is None else total_cents,
        "bonus_eligible_cents": eligible,
        "payment_method": payment,
        "original_receipt_id": original,
    }


def feed(state: MemoryState, value: dict[str, Any], now: int, **kw: Any) -> StepResult:
    return run(hb, state, "receipts.totals", value["household_id"], value, now, **kw)


def tick(state: MemoryState, now: int, rules: Rules = RULES) -> StepResult:
    return run(lambda ctx, st, *_: hb.tick(ctx, st), state, "", None, None, now, rules=rules)


def tally(result: StepResult) -> dict[str, Any]:
    (emit,) = emits(result, "household.bonus")
    assert emit.value is not None
    return emit.value


def statements(result: StepResult) -> list[dict[str, Any]]:
    return [e.value for e in emits(result, "bonus.statements") if e.value is not None]


def ledger(state: MemoryState) -> dict[str, Any]:
    """The state without the sweep schedule (time-driven, moves with the clock, not the data)."""
    return copy.deepcopy({k: v for k, v in state.data.items() if k != bl.SWEEP_KEY})


def month_of(state: MemoryState, eligible: int, **kw: Any) -> dict[str, Any]:
    """The tally after a single receipt of ``eligible`` cents."""
    return tally(feed(state, total("R-1", eligible, **kw), JAN + HOUR_MS))


# --- tiers and rounding ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("euros", "rate_bp", "bonus_cents"),
    [(399, 200, 798), (400, 250, 1000), (850, 450, 3825), (900, 500, 4500)],
)
def test_public_examples(euros: int, rate_bp: int, bonus_cents: int) -> None:
    t = month_of(MemoryState(), euros * 100)
    assert (t["eligible_cents"], t["rate_bp"], t["bonus_cents"]) == (
        euros * 100,
        rate_bp,
        bonus_cents,
    )


# Every edge of the common table, one cent below and at the threshold; bonus by hand.
TIER_EDGES = [
    (0, 0, 0),
    (4_999, 0, 0),
    (5_000, 100, 50),
    (19_999, 100, 200),  # 199.99
    (20_000, 150, 300),
    (29_999, 150, 450),  # 449.985
    (30_000, 200, 600),
    (39_999, 200, 800),  # 799.98
    (40_000, 250, 1000),
    (49_999, 250, 1250),  # 1249.975
    (50_000, 300, 1500),
    (59_999, 300, 1800),  # 1799.97
    (60_000, 350, 2100),
    (69_999, 350, 2450),  # 2449.965
    (70_000, 400, 2800),
    (79_999, 400, 3200),  # 3199.96
    (80_000, 450, 3600),
    (89_999, 450, 4050),  # 4049.955
    (90_000, 500, 4500),
    (1_000_000, 500, 50_000),  # no tier above 5 %
]


@pytest.mark.parametrize(("cents", "rate_bp", "bonus_cents"), TIER_EDGES)
def test_every_tier_edge(cents: int, rate_bp: int, bonus_cents: int) -> None:
    t = month_of(MemoryState(), cents)
    assert (t["rate_bp"], t["bonus_cents"]) == (rate_bp, bonus_cents)
    assert (br.rate_bp(DEFAULT_BONUS_TIERS, cents), br.apply_bp(cents, rate_bp)) == (
        rate_bp,
        bonus_cents,
    )


@pytest.mark.parametrize(
    ("cents", "bp", "expected"),
    [
        (5_050, 100, 51),  # 50.5 -> 51
        (5_049, 100, 50),  # 50.49 -> 50
        (20_100, 150, 302),  # 301.5 -> 302
        (40_020, 250, 1001),  # 1000.5 -> 1001
        (60_100, 350, 2104),  # 2103.5 -> 2104
        (100, 50, 1),  # benefit 0.5 -> 1
        (300, 50, 2),  # 1.5 -> 2
        (299, 50, 1),  # 1.495 -> 1
        (-5_050, 100, 0),  # a negative base pays nothing
    ],
)
def test_round_half_up(cents: int, bp: int, expected: int) -> None:
    assert br.apply_bp(cents, bp) == expected


def test_half_cent_rounds_up_on_the_month_total() -> None:
    state = MemoryState()
    result = StepResult()
    for i in range(10):
        result = feed(state, total(f"R-{i}", 5_005), JAN + i)
    t = tally(result)
    # 50 050 cents x 3 % = 1501.5 -> 1502; rounding each receipt (150.15 -> 150) would give 1500.
    assert (t["eligible_cents"], t["rate_bp"], t["bonus_cents"]) == (50_050, 300, 1502)
    assert t["receipt_count"] == 10
    # Benefit: 50 050 x 0.5 % = 250.25 -> 250 (per receipt 25.025 -> 25, also 250 by chance).
    assert (t["payment_benefit_eligible_cents"], t["payment_benefit_cents"]) == (50_050, 250)


def test_rate_applies_to_the_whole_month_not_above_the_threshold() -> None:
    state = MemoryState()
    feed(state, total("R-1", 39_000), JAN)
    t = tally(feed(state, total("R-2", 2_000), JAN + 1))
    # 410 € -> 2.5 % of all 410 €, not 2 % of 400 € + 2.5 % of 10 €.
    assert (t["eligible_cents"], t["rate_bp"], t["bonus_cents"]) == (41_000, 250, 1025)


def test_return_across_a_tier_edge_drops_the_rate_for_the_whole_month() -> None:
    state = MemoryState()
    first = tally(feed(state, total("R-1", 40_000), JAN))
    assert (first["rate_bp"], first["bonus_cents"]) == (250, 1000)
    ret = total("R-RET", -100, total_cents=-100, original="R-1", at=JAN + DAY_MS)
    t = tally(feed(state, ret, JAN + DAY_MS + 1))
    assert (t["eligible_cents"], t["rate_bp"], t["bonus_cents"]) == (39_900, 200, 798)
    assert t["receipt_count"] == 2
    assert (t["payment_benefit_eligible_cents"], t["payment_benefit_cents"]) == (39_900, 200)


def test_month_netting_negative_pays_nothing_but_keeps_the_negative_total() -> None:
    state = MemoryState()
    # A return in February of a January purchase counts in February (the month of the return).
    ret = total("R-RET", -2_500, at=FEB, original="R-JAN")
    t = tally(feed(state, ret, FEB + 1))
    assert t["month"] == "2026-02"
    assert t["eligible_cents"] == -2_500
    assert (t["rate_bp"], t["bonus_cents"]) == (0, 0)
    assert (t["payment_benefit_eligible_cents"], t["payment_benefit_cents"]) == (-2_500, 0)
    assert t["members"] == [{"customer_id": "CUST-1", "eligible_cents": -2_500}]
    # A purchase later in the month first has to make up the negative amount.
    t = tally(feed(state, total("R-2", 7_000, at=FEB + DAY_MS), FEB + DAY_MS))
    assert (t["eligible_cents"], t["rate_bp"], t["bonus_cents"]) == (4_500, 0, 0)
    assert t["payment_benefit_cents"] == 23  # 4 500 x 0.5 % = 22.5 -> 23


# --- months in Helsinki time -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "month"),
    [
        # Winter, UTC+2.
        (utc_ms(2026, 1, 31, 21, 59, 59) + 999, "2026-01"),  # 23:59:59.999 on 31 Jan
        (utc_ms(2026, 1, 31, 22, 0), "2026-02"),  # 00:00 on 1 Feb
        (utc_ms(2026, 1, 31, 22, 30), "2026-02"),  # 00:30 on 1 Feb (UTC still January)
        # Summer, UTC+3.
        (utc_ms(2026, 7, 31, 20, 59, 59) + 999, "2026-07"),
        (utc_ms(2026, 7, 31, 21, 30), "2026-08"),  # 00:30 on 1 Aug
        # DST week in March: clocks go 03:00 EET -> 04:00 EEST on Sunday 29 March 2026.
        (utc_ms(2026, 3, 29, 0, 30), "2026-03"),  # 02:30 EET
        (utc_ms(2026, 3, 29, 1, 30), "2026-03"),  # 04:30 EEST
        (utc_ms(2026, 3, 31, 21, 0), "2026-04"),  # 00:00 EEST on 1 April (UTC+2 would be 23:00)
        (utc_ms(2026, 3, 31, 20, 59), "2026-03"),
        # DST ends 04:00 EEST -> 03:00 EET on Sunday 25 October 2026.
        (utc_ms(2026, 10, 31, 21, 30), "2026-10"),  # 23:30 EET (UTC+3 would be November)
        (utc_ms(2026, 10, 31, 22, 0), "2026-11"),
    ],
)
def test_month_is_the_helsinki_calendar_month(at: int, month: str) -> None:
    state = MemoryState()
    t = tally(feed(state, total("R-1", 1_000, at=at), at + 1))
    assert t["month"] == month
    assert state.get(bl.tally_key("HH-1", month)) is not None


def test_receipts_on_both_sides_of_a_month_end_go_to_their_months() -> None:
    state = MemoryState()
    before = utc_ms(2026, 1, 31, 21, 30)  # 23:30 on 31 Jan
    after = utc_ms(2026, 1, 31, 22, 30)  # 00:30 on 1 Feb
    feed(state, total("R-1", 30_000, at=before), after + 1)
    feed(state, total("R-2", 20_000, at=after), after + 2)
    jan = bq.query(state, "HH-1", "2026-01")
    feb = bq.query(state, "HH-1", "2026-02")
    assert jan is not None and feb is not None
    assert (jan["eligible_cents"], jan["rate_bp"]) == (30_000, 200)
    assert (feb["eligible_cents"], feb["rate_bp"]) == (20_000, 150)


@pytest.mark.parametrize(
    ("month", "closes_at"),
    [
        ("2026-01", utc_ms(2026, 2, 9, 22)),  # 10 Feb 00:00 EET
        ("2026-02", utc_ms(2026, 3, 9, 22)),  # 10 Mar 00:00 EET (before the DST switch)
        ("2026-03", utc_ms(2026, 4, 9, 21)),  # 10 Apr 00:00 EEST (after it)
        ("2026-09", utc_ms(2026, 10, 9, 21)),  # 10 Oct 00:00 EEST
        ("2026-10", utc_ms(2026, 11, 9, 22)),  # 10 Nov 00:00 EET
        ("2026-12", utc_ms(2027, 1, 9, 22)),  # across the year
    ],
)
def test_close_instant_is_dst_correct(month: str, closes_at: int) -> None:
    assert br.close_at(RULES, month) == closes_at


# --- payment-method benefit ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "payment", "benefit_base"),
    [
        ("S_MARKET", OWN, 10_000),
        ("HOTEL", OWN, 10_000),  # own chain, total-only: still S Group's own outlet
        ("PARTNER", OWN, 0),  # Bonus partner: Bonus yes, payment benefit no
        ("S_MARKET", "GIFT_CARD", 0),
        ("S_MARKET", "OTHER_CARD", 0),
        ("S_MARKET", "CASH", 0),
    ],
)
def test_payment_benefit_only_for_the_own_payment_at_own_chains(
    chain: str, payment: str, benefit_base: int
) -> None:
    t = month_of(MemoryState(), 10_000, chain=chain, payment=payment)
    assert (t["eligible_cents"], t["rate_bp"], t["bonus_cents"]) == (10_000, 100, 100)
    assert t["payment_benefit_eligible_cents"] == benefit_base
    assert t["payment_benefit_cents"] == benefit_base // 200  # 0.5 %


def test_payment_benefit_is_summed_over_the_month_of_mixed_receipts() -> None:
    state = MemoryState()
    feed(state, total("R-1", 12_345), JAN)
    feed(state, total("R-2", 50_000, chain="PARTNER"), JAN + 1)
    feed(state, total("R-3", 7_000, payment="GIFT_CARD"), JAN + 2)
    t = tally(feed(state, total("R-4", 655, chain="PRISMA"), JAN + 3))
    assert t["eligible_cents"] == 70_000
    assert (t["rate_bp"], t["bonus_cents"]) == (400, 2800)
    # 13 000 x 0.5 % = 65
    assert (t["payment_benefit_eligible_cents"], t["payment_benefit_cents"]) == (13_000, 65)


def test_payment_benefit_settings_come_from_the_rules() -> None:
    rules = Rules(
        product_level_chains=frozenset(),
        payment_benefit_bp=100,
        payment_benefit_method="MOBILE",
    )
    state = MemoryState()
    t = tally(feed(state, total("R-1", 10_000, payment="MOBILE"), JAN, rules=rules))
    assert (t["payment_benefit_eligible_cents"], t["payment_benefit_cents"]) == (10_000, 100)
    t = tally(feed(state, total("R-2", 10_000, payment=OWN), JAN + 1, rules=rules))
    assert t["payment_benefit_eligible_cents"] == 10_000


# --- members, the emitted tally, idempotence ---------------------------------------------------


def test_first_receipt_emits_the_full_tally() -> None:
    state = MemoryState()
    result = feed(state, total("R-1", 12_345), JAN + HOUR_MS)
    assert result.rejects == []
    assert result.events["counted"] == 1
    assert result.emits == [
        Emit(
            "household.bonus",
            "HH-1|2026-01",
            {
                "household_id": "HH-1",
                "month": "2026-01",
                "eligible_cents": 12_345,
                "receipt_count": 1,
                "rate_bp": 100,
                "bonus_cents": 123,  # 123.45
                "payment_benefit_eligible_cents": 12_345,
                "payment_benefit_cents": 62,  # 61.725
                "members": [{"customer_id": "CUST-1", "eligible_cents": 12_345}],
                "closed": False,
                "updated_at": JAN + HOUR_MS,
            },
        )
    ]


def test_per_member_totals() -> None:
    state = MemoryState()
    feed(state, total("R-1", 30_000, cid="CUST-MAIN"), JAN)
    feed(state, total("R-2", 15_000, cid="CUST-B"), JAN + 1)
    feed(state, total("R-3", 5_000, cid="CUST-A", payment="CASH"), JAN + 2)
    t = tally(feed(state, total("R-4", -1_000, cid="CUST-B", original="R-2"), JAN + 3))
    assert t["members"] == [
        {"customer_id": "CUST-A", "eligible_cents": 5_000},
        {"customer_id": "CUST-B", "eligible_cents": 14_000},
        {"customer_id": "CUST-MAIN", "eligible_cents": 30_000},
    ]
    assert sum(m["eligible_cents"] for m in t["members"]) == t["eligible_cents"] == 49_000
    assert (t["rate_bp"], t["bonus_cents"]) == (250, 1225)
    assert t["receipt_count"] == 4


def test_households_are_separate() -> None:
    state = MemoryState()
    feed(state, total("R-1", 30_000, hh="HH-1"), JAN)
    t = tally(feed(state, total("R-2", 10_000, hh="HH-10"), JAN + 1))
    assert (t["household_id"], t["eligible_cents"]) == ("HH-10", 10_000)
    assert {k for k in state.data if k.startswith("tally|")} == {
        "tally|HH-1|2026-01",
        "tally|HH-10|2026-01",
    }
    one = bq.query(state, "HH-1", "2026-01")
    assert one is not None and one["eligible_cents"] == 30_000


def test_duplicate_counted_once_and_current_tally_resent() -> None:
    state = MemoryState()
    first = feed(state, total("R-1", 30_000), JAN)
    second = feed(state, total("R-2", 5_000), JAN + 1)
    snapshot = ledger(state)
    again = feed(state, total("R-1", 30_000), JAN + HOUR_MS)
    assert again.events["duplicate"] == 1
    assert again.events["counted"] == 0
    assert ledger(state) == snapshot
    # The current tally (not the one the first delivery produced), unchanged, same key.
    assert again.emits == second.emits
    assert tally(again)["eligible_cents"] == 35_000
    assert first.emits[0].key == again.emits[0].key


def test_duplicate_is_by_receipt_id_even_if_the_content_differs() -> None:
    state = MemoryState()
    feed(state, total("R-1", 30_000), JAN)
    again = feed(state, total("R-1", 99_999), JAN + 1)
    assert again.events["duplicate"] == 1
    assert tally(again)["eligible_cents"] == 30_000


def test_same_receipt_id_in_another_household_counts_there() -> None:
    # Dedupe is per household (the ledger is partitioned by household).
    state = MemoryState()
    feed(state, total("R-1", 30_000, hh="HH-1"), JAN)
    result = feed(state, total("R-1", 30_000, hh="HH-2"), JAN + 1)
    assert result.events["counted"] == 1
    assert tally(result)["eligible_cents"] == 30_000


def test_card_moved_household_the_record_decides() -> None:
    # The same card (customer) moved from HH-1 to HH-2: each receipt accrues to the household
    # on its record (the link when it was routed).
    state = MemoryState()
    feed(state, total("R-1", 30_000, hh="HH-1"), JAN)
    feed(state, total("R-2", 20_000, hh="HH-2", at=JAN + DAY_MS), JAN + DAY_MS)
    one, two = bq.query(state, "HH-1", "2026-01"), bq.query(state, "HH-2", "2026-01")
    assert one is not None and two is not None
    assert (one["members"], two["members"]) == ({"CUST-1": 30_000}, {"CUST-1": 20_000})


# --- bad input -------------------------------------------------------------------------------


def test_key_must_be_the_household() -> None:
    state = MemoryState()
    result = run(hb, state, "receipts.totals", "HH-2", total("R-1", 1_000), JAN)
    assert [r.code for r in result.rejects] == ["key_mismatch"]
    assert result.emits == []
    assert state.data == {}


@pytest.mark.parametrize("field", ["household_id", "receipt_id", "customer_id"])
def test_ids_with_the_key_separator_are_rejected(field: str) -> None:
    state = MemoryState()
    value = total("R-1", 1_000) | {field: "A|B"}
    result = run(hb, state, "receipts.totals", value["household_id"], value, JAN)
    assert [r.code for r in result.rejects] == ["bad_identifier"]
    assert state.data == {}


def test_tombstone_rejected() -> None:
    state = MemoryState()
    result = run(hb, state, "receipts.totals", "HH-1", None, JAN)
    assert [r.code for r in result.rejects] == ["missing_value"]
    assert state.data == {}


# --- closing the month -----------------------------------------------------------------------


def two_households_in_january(state: MemoryState) -> None:
    feed(state, total("R-1", 40_000, hh="HH-1", cid="CUST-1"), JAN)
    feed(state, total("R-2", 5_000, hh="HH-1", cid="CUST-2", payment="CASH"), JAN + 1)
    feed(state, total("R-3", 85_000, hh="HH-2", cid="CUST-3"), JAN + 2)
    feed(state, total("R-4", 1_000, hh="HH-3", at=FEB), FEB + 1)  # February: stays open


def statement(
    hh: str,
    month: str,
    seq: int,
    eligible: int,
    rate: int,
    bonus: int,
    benefit_base: int,
    benefit: int,
    members: dict[str, int],
    delta_bonus: int,
    delta_benefit: int,
    issued_at: int,
) -> dict[str, Any]:
    return {
        "household_id": hh,
        "month": month,
        "seq": seq,
        "kind": "STATEMENT" if seq == 0 else "CORRECTION",
        "eligible_cents": eligible,
        "rate_bp": rate,
        "bonus_cents": bonus,
        "payment_benefit_eligible_cents": benefit_base,
        "payment_benefit_cents": benefit,
        "members": [{"customer_id": c, "eligible_cents": members[c]} for c in sorted(members)],
        "delta_bonus_cents": delta_bonus,
        "delta_payment_benefit_cents": delta_benefit,
        "issued_at": issued_at,
    }


HH1_JAN = statement(
    "HH-1", "2026-01", 0, 45_000, 250, 1125, 40_000, 200,
    {"CUST-1": 40_000, "CUST-2": 5_000}, 1125, 200, JAN_CLOSE,
)  # fmt: skip
HH2_JAN = statement(
    "HH-2", "2026-01", 0, 85_000, 450, 3825, 85_000, 425, {"CUST-3": 85_000}, 3825, 425, JAN_CLOSE
)


def test_nothing_is_stated_one_ms_before_the_close() -> None:
    state = MemoryState()
    two_households_in_january(state)
    snapshot = copy.deepcopy(state.data)
    result = tick(state, JAN_CLOSE - 1)
    assert statements(result) == []
    assert result.events["month_closed"] == 0
    # A receipt processed 1 ms before the close is still counted into the open month.
    result = feed(state, total("R-5", 100, hh="HH-1"), JAN_CLOSE - 1)
    assert statements(result) == []
    assert tally(result)["closed"] is False
    assert state.data != snapshot


def test_close_at_the_10th_0000_helsinki_states_every_open_household() -> None:
    state = MemoryState()
    two_households_in_january(state)
    assert sorted(k for k in state.data if k.startswith("open|")) == [
        "open|2026-01|HH-1",
        "open|2026-01|HH-2",
        "open|2026-02|HH-3",
    ]
    assert state.get(bl.OPEN_MONTHS_KEY) == ["2026-01", "2026-02"]
    result = tick(state, JAN_CLOSE)
    assert result.events["month_closed"] == 1
    assert result.events["statement"] == 2
    by_key = {e.key: e.value for e in emits(result, "bonus.statements")}
    assert by_key == {"HH-1|2026-01|0": HH1_JAN, "HH-2|2026-01|0": HH2_JAN}
    # The tallies are re-emitted, closed; February is untouched.
    closed = {e.key: e.value for e in emits(result, "household.bonus")}
    assert set(closed) == {"HH-1|2026-01", "HH-2|2026-01"}
    assert all(
        v is not None and v["closed"] and v["updated_at"] == JAN_CLOSE for v in closed.values()
    )
    assert sorted(k for k in state.data if k.startswith("open|")) == ["open|2026-02|HH-3"]
    assert state.get(bl.OPEN_MONTHS_KEY) == ["2026-02"]
    assert state.get(bl.stated_key("HH-1", "2026-01")) == HH1_JAN
    # Closing again emits nothing more.
    assert tick(state, JAN_CLOSE + HOUR_MS).emits == []


def test_the_first_record_after_the_close_instant_closes_the_month_itself() -> None:
    state = MemoryState()
    two_households_in_january(state)
    result = feed(state, total("R-5", 2_000, hh="HH-3", at=FEB + 1), JAN_CLOSE + 5)
    assert sorted(e.key for e in emits(result, "bonus.statements") if e.key) == [
        "HH-1|2026-01|0",
        "HH-2|2026-01|0",
    ]
    assert [s["issued_at"] for s in statements(result)] == [JAN_CLOSE + 5] * 2
    assert bq.query(state, "HH-3", "2026-02") is not None


def test_late_receipt_before_the_close_counts_in_its_own_month() -> None:
    state = MemoryState()
    feed(state, total("R-1", 38_000), JAN)
    feed(state, total("R-2", 1_000, at=FEB), FEB)
    # Bought on 31 January, delivered on 9 February at 23:59:59.999 Helsinki.
    late = total("R-3", 2_000, at=utc_ms(2026, 1, 31, 12))
    t = tally(feed(state, late, JAN_CLOSE - 1))
    assert (t["month"], t["eligible_cents"], t["rate_bp"], t["closed"]) == (
        "2026-01",
        40_000,
        250,
        False,
    )
    feb = bq.query(state, "HH-1", "2026-02")
    assert feb is not None and feb["eligible_cents"] == 1_000


def test_late_receipt_after_the_close_issues_a_correction() -> None:
    state = MemoryState()
    two_households_in_january(state)
    tick(state, JAN_CLOSE)
    # HH-1 stated 45 000 (2.5 %, 1125; benefit 200). A 5 000 January receipt arrives later:
    # 50 000 -> 3 % = 1500, benefit base 45 000 -> 225.
    now = JAN_CLOSE + 3 * DAY_MS
    result = feed(state, total("R-LATE", 5_000, hh="HH-1", cid="CUST-2"), now)
    assert result.events["late_receipt"] == 1
    t = tally(result)
    assert (t["eligible_cents"], t["bonus_cents"], t["closed"]) == (50_000, 1500, True)
    first = statement(
        "HH-1", "2026-01", 1, 50_000, 300, 1500, 45_000, 225,
        {"CUST-1": 40_000, "CUST-2": 10_000}, 375, 25, now,
    )  # fmt: skip
    assert emits(result, "bonus.statements") == [Emit("bonus.statements", "HH-1|2026-01|1", first)]
    # A second late receipt, a return paid back to the card: deltas against seq 1.
    now2 = now + DAY_MS
    ret = total("R-RET", -20_000, hh="HH-1", cid="CUST-1", original="R-1")
    result = feed(state, ret, now2)
    second = statement(
        "HH-1", "2026-01", 2, 30_000, 200, 600, 25_000, 125,
        {"CUST-1": 20_000, "CUST-2": 10_000}, -900, -100, now2,
    )  # fmt: skip
    assert statements(result) == [second]
    assert state.get(bl.stated_key("HH-1", "2026-01")) == second
    # The deltas add up to what is owed now.
    stated = [HH1_JAN, first, second]
    assert sum(s["delta_bonus_cents"] for s in stated) == second["bonus_cents"]
    assert sum(s["delta_payment_benefit_cents"] for s in stated) == second["payment_benefit_cents"]
    # The other household's statement is untouched.
    assert state.get(bl.stated_key("HH-2", "2026-01")) == HH2_JAN


def test_duplicate_of_a_closed_month_receipt_issues_no_correction() -> None:
    state = MemoryState()
    two_households_in_january(state)
    tick(state, JAN_CLOSE)
    snapshot = ledger(state)
    result = feed(state, total("R-1", 40_000, hh="HH-1"), JAN_CLOSE + DAY_MS)
    assert result.events["duplicate"] == 1
    assert result.events["correction"] == 0
    assert ledger(state) == snapshot
    # Only what was already issued is sent again, unchanged, under its own key.
    assert statements(result) == [HH1_JAN]
    assert tally(result)["closed"] is True


def test_late_receipt_of_a_month_without_a_statement_issues_the_statement() -> None:
    state = MemoryState()
    two_households_in_january(state)
    tick(state, JAN_CLOSE)
    now = JAN_CLOSE + DAY_MS
    result = feed(state, total("R-9", 6_000, hh="HH-9"), now)
    expected = statement(
        "HH-9", "2026-01", 0, 6_000, 100, 60, 6_000, 30, {"CUST-1": 6_000}, 60, 30, now
    )
    assert statements(result) == [expected]
    assert tally(result)["closed"] is True
    assert "open|2026-01|HH-9" not in state.data


def test_late_receipt_that_changes_no_stated_figure_issues_no_correction() -> None:
    state = MemoryState()
    two_households_in_january(state)
    tick(state, JAN_CLOSE)
    # A hotel bill with nothing bonus-eligible, by a member already on the statement.
    zero = total("R-HOTEL", 0, hh="HH-2", cid="CUST-3", chain="HOTEL", total_cents=12_000)
    result = feed(state, zero, JAN_CLOSE + DAY_MS)
    assert statements(result) == []
    assert result.events["late_unchanged"] == 1
    assert tally(result)["receipt_count"] == 2
    assert state.get(bl.stated_key("HH-2", "2026-01")) == HH2_JAN


def test_a_month_without_receipts_states_nothing() -> None:
    state = MemoryState()
    feed(state, total("R-1", 40_000), JAN)
    tick(state, JAN_CLOSE)
    result = tick(state, FEB_CLOSE + DAY_MS)  # HH-1 bought nothing in February
    assert result.emits == []
    assert bq.query(state, "HH-1", "2026-02") is None


def test_a_month_with_only_a_return_is_stated_at_zero() -> None:
    state = MemoryState()
    feed(state, total("R-RET", -3_000, at=FEB, original="R-0"), FEB)
    result = tick(state, FEB_CLOSE)
    assert statements(result) == [
        statement(
            "HH-1", "2026-02", 0, -3_000, 0, 0, -3_000, 0, {"CUST-1": -3_000}, 0, 0, FEB_CLOSE
        )
    ]


def test_close_day_comes_from_the_rules() -> None:
    rules = Rules(product_level_chains=frozenset(), bonus_close_day=1)
    state = MemoryState()
    feed(state, total("R-1", 40_000), JAN, rules=rules)
    feb_1 = utc_ms(2026, 1, 31, 22)  # 1 Feb 00:00 Helsinki
    assert statements(tick(state, feb_1 - 1, rules)) == []
    assert [s["seq"] for s in statements(tick(state, feb_1, rules))] == [0]


def test_several_due_months_close_in_order() -> None:
    state = MemoryState()
    feed(state, total("R-1", 10_000, at=JAN), JAN)
    feed(state, total("R-2", 20_000, at=FEB), FEB)
    assert state.get(bl.OPEN_MONTHS_KEY) == ["2026-01", "2026-02"]
    result = tick(state, FEB_CLOSE)  # the clock jumped over both closes
    assert [e.key for e in emits(result, "bonus.statements")] == [
        "HH-1|2026-01|0",
        "HH-1|2026-02|0",
    ]
    assert result.events["month_closed"] == 2
    assert state.get(bl.OPEN_MONTHS_KEY) is None


# --- bounded dedupe: the receipt ids live in the tally -----------------------------------------

WINDOW = RULES.bonus_dedupe_window_ms
MINUTE_MS = 60_000


def held_ids(state: MemoryState) -> dict[str, list[str]]:
    """The receipt ids each tally holds, by tally key (tallies holding none left out)."""
    return {
        k: v["receipt_ids"]
        for k, v in state.data.items()
        if k.startswith("tally|") and v["receipt_ids"]
    }


def assert_dedupe_consistent(state: MemoryState) -> None:
    """The counter is exact and every tally holding ids is indexed for their expiry."""
    held = held_ids(state)
    assert hb.seen_count(state) == sum(len(ids) for ids in held.values())
    for ids in held.values():
        assert ids == sorted(set(ids))
    kept = {k for k in state.data if k.startswith("kept|")}
    for tkey in held:
        _, hh, month = tkey.split("|")
        assert bl.kept_key(month, hh) in kept
    assert {k.split("|")[1] for k in kept} <= set(state.get(bl.KEPT_MONTHS_KEY) or {})
    assert not any(k.startswith(("seen|", "seenx|")) for k in state.data)


def test_receipt_ids_are_kept_in_the_tally_and_never_shown() -> None:
    state = MemoryState()
    feed(state, total("R-2", 1_000), JAN)
    result = feed(state, total("R-1", 1_000, cid="CUST-2"), JAN + 1)
    assert state.get(bl.tally_key("HH-1", "2026-01"))["receipt_ids"] == ["R-1", "R-2"]
    assert hb.seen_count(state) == 2
    assert state.get(bl.SEEN_COUNT_KEY) == {"n": 2, "op": "+HH-1|2026-01|R-1"}
    assert {k for k in state.data if k.startswith("kept|")} == {"kept|2026-01|HH-1"}
    assert state.get(bl.KEPT_MONTHS_KEY) == {"2026-01": JAN_CLOSE + WINDOW}
    assert_dedupe_consistent(state)
    # Internal: neither the emitted tally nor the query shows them.
    assert "receipt_ids" not in tally(result)
    assert set(tally(result)) == set(bl.TALLY_FIELDS)
    found = bq.query(state, "HH-1", "2026-01")
    assert found is not None and "receipt_ids" not in found
    # A second household-month adds an index entry, not a meta write per receipt.
    feed(state, total("R-3", 1_000, hh="HH-2"), JAN + 2)
    assert state.get(bl.KEPT_MONTHS_KEY) == {"2026-01": JAN_CLOSE + WINDOW}
    assert_dedupe_consistent(state)


def test_counting_a_receipt_into_an_open_month_is_three_writes() -> None:
    # The household's receipt list entry (idempotent), the dedupe counter, the tally.
    state = MemoryState()
    feed(state, total("R-1", 1_000), JAN)
    feed(state, total("R-2", 1_000), JAN + 1)  # starts the sweep schedule
    recorder = Recorder(state.data)
    feed(recorder, total("R-3", 1_000), JAN + 2)
    assert [k for k, _ in recorder.writes] == [
        bl.receipt_key("HH-1", "2026-01", "R-3"),
        bl.SEEN_COUNT_KEY,
        bl.tally_key("HH-1", "2026-01"),
    ]


def test_ids_expire_a_window_after_the_close() -> None:
    state = MemoryState()
    feed(state, total("R-1", 1_000), JAN)
    feed(state, total("R-2", 1_000), JAN + 1)
    feed(state, total("R-3", 1_000, at=FEB), FEB)
    tick(state, JAN_CLOSE)
    assert hb.seen_count(state) == 3
    # Within the window a redelivery is a duplicate, also after sweeps.
    tick(state, JAN_CLOSE + WINDOW - HOUR_MS)
    assert feed(state, total("R-1", 1_000), JAN_CLOSE + WINDOW - 1).events["duplicate"] == 1
    result = tick(state, JAN_CLOSE + WINDOW)
    assert result.events["dedupe_expired"] == 2
    assert result.emits == []  # the figures do not change
    assert hb.seen_count(state) == 1
    assert held_ids(state) == {"tally|HH-1|2026-02": ["R-3"]}
    assert state.get(bl.KEPT_MONTHS_KEY) == {"2026-02": FEB_CLOSE + WINDOW}
    assert "kept|2026-01|HH-1" not in state.data
    jan = bq.query(state, "HH-1", "2026-01")
    assert jan is not None and (jan["eligible_cents"], jan["receipt_count"]) == (2_000, 2)
    assert_dedupe_consistent(state)


def test_a_redelivery_after_the_ids_expired_counts_again() -> None:
    # The documented price of bounded dedupe: nothing is left to recognise the receipt by.
    state = MemoryState()
    feed(state, total("R-1", 40_000), JAN)
    tick(state, JAN_CLOSE)
    tick(state, JAN_CLOSE + WINDOW)
    now = JAN_CLOSE + WINDOW + DAY_MS
    result = feed(state, total("R-1", 40_000), now)
    assert (result.events["counted"], result.events["correction"]) == (1, 1)
    assert tally(result)["eligible_cents"] == 80_000
    assert statements(result)[0]["seq"] == 1
    # The new id is kept a full window from now.
    assert held_ids(state) == {"tally|HH-1|2026-01": ["R-1"]}
    assert state.get(bl.KEPT_MONTHS_KEY) == {"2026-01": now + WINDOW}
    assert_dedupe_consistent(state)


def test_a_late_receipt_keeps_its_month_s_ids_a_window_after_it_was_counted() -> None:
    state = MemoryState()
    feed(state, total("R-1", 1_000, hh="HH-1"), JAN)
    feed(state, total("R-2", 1_000, hh="HH-2"), JAN)
    tick(state, JAN_CLOSE)
    late = JAN_CLOSE + 30 * DAY_MS
    feed(state, total("R-3", 1_000, hh="HH-1"), late)
    result = tick(state, JAN_CLOSE + WINDOW)
    assert result.events["dedupe_expired"] == 1  # HH-2's only
    assert held_ids(state) == {"tally|HH-1|2026-01": ["R-1", "R-3"]}
    assert state.get(bl.KEPT_MONTHS_KEY) == {"2026-01": late + WINDOW}
    assert feed(state, total("R-1", 1_000), late + WINDOW - 1).events["duplicate"] == 1
    assert tick(state, late + WINDOW).events["dedupe_expired"] == 2
    assert state.get(bl.KEPT_MONTHS_KEY) is None
    assert hb.seen_count(state) == 0
    assert_dedupe_consistent(state)


def test_sweep_runs_from_the_step_on_its_schedule() -> None:
    interval = RULES.bonus_sweep_interval_ms
    state = MemoryState()
    feed(state, total("R-1", 1_000, hh="HH-1"), JAN)
    tick(state, JAN_CLOSE)
    feed(state, total("R-2", 1_000, hh="HH-2"), JAN_CLOSE + HOUR_MS)  # late: kept longer

    def current(rid: str, now: int) -> StepResult:
        return feed(state, total(rid, 100, hh="HH-3", at=now), now)

    s1 = JAN_CLOSE + WINDOW + 30 * MINUTE_MS
    assert current("R-A", s1).events["dedupe_expired"] == 1
    assert state.get(bl.SWEEP_KEY) == s1 + interval
    assert state.get(bl.KEPT_MONTHS_KEY)["2026-01"] == JAN_CLOSE + HOUR_MS + WINDOW
    # HH-2's ids are due at s2, but the next sweep is not.
    s2 = JAN_CLOSE + WINDOW + HOUR_MS + MINUTE_MS
    assert current("R-B", s2).events["dedupe_expired"] == 0
    assert "tally|HH-1|2026-01" not in held_ids(state)
    assert "tally|HH-2|2026-01" in held_ids(state)
    assert current("R-C", s1 + interval).events["dedupe_expired"] == 1
    assert "2026-01" not in state.get(bl.KEPT_MONTHS_KEY)
    assert_dedupe_consistent(state)


class ReadRecorder(MemoryState):
    """MemoryState that records the prefixes scanned."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__()
        self.data = data
        self.scans: list[str] = []

    def items(self, prefix: str) -> Iterator[tuple[str, Any]]:
        self.scans.append(prefix)
        return super().items(prefix)


def test_expiry_reads_only_the_index_of_the_due_months() -> None:
    state = MemoryState()
    for i in range(5):
        feed(state, total(f"R-{i}", 1_000, hh=f"HH-{i}"), JAN)
        feed(state, total(f"R-F{i}", 1_000, hh=f"HH-{i}", at=FEB), FEB)
    tick(state, JAN_CLOSE)
    reads = ReadRecorder(state.data)
    result = run(lambda ctx, st, *_: hb.tick(ctx, st), reads, "", None, None, JAN_CLOSE + WINDOW)
    assert result.events["dedupe_expired"] == 5
    # February closed at this tick (its own open index); only January's ids were due.
    assert reads.scans == ["open|2026-02|", "kept|2026-01|"]


def test_an_index_entry_without_ids_is_dropped() -> None:
    # What a crash before the tally write leaves behind (the redelivery would count it).
    state = MemoryState()
    feed(state, total("R-1", 1_000), JAN)
    tick(state, JAN_CLOSE)
    state.set(bl.kept_key("2026-01", "HH-9"), 1)
    result = tick(state, JAN_CLOSE + WINDOW)
    assert result.events["dedupe_expired"] == 1
    assert not any(k.startswith("kept|") for k in state.data)
    assert state.get(bl.KEPT_MONTHS_KEY) is None
    assert hb.seen_count(state) == 0


def test_expiry_after_a_long_jump_of_the_clock() -> None:
    state = MemoryState()
    recent = utc_ms(2026, 12, 20)
    feed(state, total("R-NEW", 100, at=recent), recent)
    # Then a replay of old records: the clock goes back two years, over three days.
    for i in range(40):
        t = utc_ms(2025, 1, 1) + i * 2 * HOUR_MS
        feed(state, total(f"R-{i}", 100, at=t), t)
    assert hb.seen_count(state) == 41
    assert state.get(bl.KEPT_MONTHS_KEY)["2025-01"] == br.close_at(RULES, "2025-01") + WINDOW
    # January 2025 closes (in processing time) only now: its ids are kept a window from now.
    now = utc_ms(2027, 1, 1)
    assert tick(state, now).events["dedupe_expired"] == 0
    assert state.get(bl.KEPT_MONTHS_KEY)["2025-01"] == now + WINDOW
    result = tick(state, now + WINDOW)
    assert result.events["dedupe_expired"] == 40
    assert held_ids(state) == {"tally|HH-1|2026-12": ["R-NEW"]}
    assert hb.seen_count(state) == 1
    assert_dedupe_consistent(state)


def test_a_receipt_for_a_closed_month_on_an_older_clock_is_corrected() -> None:
    # The clock went back (a replay) to before the close instant of a month already stated:
    # the change still comes with a correction, never silently.
    state = MemoryState()
    feed(state, total("R-1", 40_000), JAN)
    tick(state, JAN_CLOSE)
    result = feed(state, total("R-2", 10_000), JAN + DAY_MS)
    assert [(s["seq"], s["eligible_cents"]) for s in statements(result)] == [(1, 50_000)]
    assert tally(result)["closed"] is True
    assert not any(k.startswith("open|") for k in state.data)
    assert state.get(bl.OPEN_MONTHS_KEY) is None
    assert_dedupe_consistent(state)


# --- crashes: any prefix of a step's writes, then the redelivery -----------------------------

DELETED = object()


class Recorder(MemoryState):
    """MemoryState that records every write; in the worker each is one changelog message."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__()
        self.data = copy.deepcopy(data)
        self.writes: list[tuple[str, Any]] = []

    def set(self, key: str, value: Any) -> None:
        self.writes.append((key, copy.deepcopy(value)))
        super().set(key, value)

    def delete(self, key: str) -> None:
        self.writes.append((key, DELETED))
        super().delete(key)


def restored(data: dict[str, Any], writes: list[tuple[str, Any]]) -> MemoryState:
    """The state a fresh worker restores when only ``writes`` reached the changelog."""
    state = MemoryState()
    state.data = copy.deepcopy(data)
    for key, value in writes:
        if value is DELETED:
            state.delete(key)
        else:
            state.set(key, copy.deepcopy(value))
    return state


def outcome(state: MemoryState) -> dict[str, Any]:
    """The ledger without what depends on when it was done (the redelivery is later)."""
    out: dict[str, Any] = {}
    for key, value in state.data.items():
        if key == bl.SWEEP_KEY:
            continue
        if key == bl.KEPT_MONTHS_KEY:
            value = sorted(value)  # due instants move with the processing time
        elif isinstance(value, dict):
            value = {f: v for f, v in value.items() if f not in ("issued_at", "updated_at")}
        out[key] = value
    return out


def without_issued_at(statement: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in statement.items() if k != "issued_at"}


Scenario = tuple[MemoryState, dict[str, Any], int]


def first_receipt() -> Scenario:
    state = MemoryState()
    feed(state, total("R-0", 1_000, hh="HH-2"), JAN)
    return state, total("R-1", 12_345), JAN + HOUR_MS


def receipt_crossing_a_tier() -> Scenario:
    state = MemoryState()
    feed(state, total("R-1", 39_000), JAN)
    return state, total("R-2", 2_000), JAN + HOUR_MS


def late_receipt_in_the_closing_step() -> Scenario:
    state = MemoryState()
    two_households_in_january(state)
    # The step first closes January (both households), then counts and corrects.
    return state, total("R-LATE", 5_000, hh="HH-1", cid="CUST-2"), JAN_CLOSE + 1


def late_receipt_correction() -> Scenario:
    state = MemoryState()
    two_households_in_january(state)
    tick(state, JAN_CLOSE)
    return state, total("R-LATE", 5_000, hh="HH-1", cid="CUST-2"), JAN_CLOSE + 3 * DAY_MS


def late_receipt_first_statement() -> Scenario:
    state = MemoryState()
    two_households_in_january(state)
    tick(state, JAN_CLOSE)
    return state, total("R-9", 6_000, hh="HH-9"), JAN_CLOSE + DAY_MS


def late_receipt_changing_nothing_stated() -> Scenario:
    state = MemoryState()
    two_households_in_january(state)
    tick(state, JAN_CLOSE)
    zero = total("R-HOTEL", 0, hh="HH-2", cid="CUST-3", chain="HOTEL", total_cents=12_000)
    return state, zero, JAN_CLOSE + DAY_MS


def receipt_after_a_close_and_an_expiry_in_the_step() -> Scenario:
    state = MemoryState()
    feed(state, total("R-1", 40_000), JAN)
    feed(state, total("R-2", 1_000, hh="HH-2"), JAN)
    feed(state, total("R-3", 20_000, at=FEB), FEB)
    tick(state, JAN_CLOSE)
    # The step closes February and expires January's ids, then counts a March receipt.
    now = JAN_CLOSE + WINDOW + 2 * DAY_MS
    return state, total("R-4", 5_000, at=now), now


def redelivery_after_the_ids_expired() -> Scenario:
    state = MemoryState()
    feed(state, total("R-1", 40_000), JAN)
    tick(state, JAN_CLOSE)
    tick(state, JAN_CLOSE + WINDOW)
    return state, total("R-1", 40_000), JAN_CLOSE + WINDOW + DAY_MS


def closed_month_on_an_older_clock() -> Scenario:
    state = MemoryState()
    feed(state, total("R-1", 40_000), JAN)
    tick(state, JAN_CLOSE)
    return state, total("R-2", 10_000), JAN + DAY_MS  # the redelivery is before the close too


@pytest.mark.parametrize(
    "scenario",
    [
        first_receipt,
        receipt_crossing_a_tier,
        late_receipt_in_the_closing_step,
        late_receipt_correction,
        late_receipt_first_statement,
        late_receipt_changing_nothing_stated,
        receipt_after_a_close_and_an_expiry_in_the_step,
        redelivery_after_the_ids_expired,
        closed_month_on_an_older_clock,
    ],
)
def test_a_crash_after_any_prefix_of_the_writes_counts_the_receipt_once(
    scenario: Any,
) -> None:
    pre, value, now = scenario()
    hh, rid = value["household_id"], value["receipt_id"]
    tkey = bl.tally_key(hh, RULES.local_month(value["purchased_at"]))
    before = pre.get(tkey)
    recorder = Recorder(pre.data)
    step = feed(recorder, value, now)
    assert step.events["counted"] == 1
    writes = recorder.writes
    # Counting is ONE write: the tally with the receipt's id.
    counts = [i for i, (k, v) in enumerate(writes) if k == tkey and rid in v["receipt_ids"]]
    assert len(counts) == 1
    (count_at,) = counts
    redelivered = now + MINUTE_MS
    end = max(now, FEB_CLOSE) + WINDOW + 40 * DAY_MS  # every month closed, every id expired

    # Without a crash: the step, then the redelivery (a duplicate), then the end.
    reference = restored(pre.data, writes)
    assert feed(reference, value, redelivered).events["duplicate"] == 1
    after_redelivery = outcome(reference)
    ref_tally = reference.get(tkey)
    tick(reference, end)
    at_end = outcome(reference)
    base = 0 if before is None else before["eligible_cents"]
    assert ref_tally["eligible_cents"] == base + value["bonus_eligible_cents"]

    sent_before_crash = {
        e.key: e.value for e in step.emits if e.topic == "bonus.statements" and e.value
    }
    for cut in range(len(writes) + 1):
        state = restored(pre.data, writes[:cut])
        again = feed(state, value, redelivered)
        # Counted by the redelivery exactly when the crash came before the tally write.
        assert again.events["counted"] == (1 if cut <= count_at else 0), cut
        assert again.events["duplicate"] == (0 if cut <= count_at else 1), cut
        assert outcome(state) == after_redelivery, cut
        assert state.get(tkey)["receipt_ids"].count(rid) == 1
        assert_dedupe_consistent(state)
        # A statement sent before the crash is never contradicted under its seq.
        by_key = {
            f"{s['household_id']}|{s['month']}|{s['seq']}": s for _, s in state.items("stmt|")
        }
        for key, sent in sent_before_crash.items():
            assert without_issued_at(by_key[key]) == without_issued_at(sent), (cut, key)
        tick(state, end)
        assert outcome(state) == at_end, cut
        assert_dedupe_consistent(state)


def test_a_crash_after_any_prefix_of_a_tick_is_redone() -> None:
    # A tick that closes February and expires January's ids, cut anywhere and run again.
    pre = MemoryState()
    two_households_in_january(pre)
    tick(pre, JAN_CLOSE)
    # HH-1's late receipt keeps its ids past this tick; HH-2's expire.
    feed(pre, total("R-LATE", 5_000, hh="HH-1", cid="CUST-2"), JAN_CLOSE + 5 * DAY_MS)
    now = JAN_CLOSE + WINDOW + DAY_MS
    recorder = Recorder(pre.data)
    first = tick(recorder, now)
    assert (first.events["month_closed"], first.events["dedupe_expired"]) == (1, 1)
    assert sorted(held_ids(recorder)) == ["tally|HH-1|2026-01", "tally|HH-3|2026-02"]
    writes = recorder.writes
    reference = restored(pre.data, writes)
    tick(reference, now + MINUTE_MS)
    expected = outcome(reference)
    for cut in range(len(writes) + 1):
        state = restored(pre.data, writes[:cut])
        tick(state, now + MINUTE_MS)
        assert outcome(state) == expected, cut
        assert_dedupe_consistent(state)


# --- query -----------------------------------------------------------------------------------


def test_query_returns_the_month_and_its_statements() -> None:
    state = MemoryState()
    two_households_in_january(state)
    tick(state, JAN_CLOSE)
    now = JAN_CLOSE + DAY_MS
    feed(state, total("R-LATE", 5_000, hh="HH-1", cid="CUST-2"), now)
    correction = state.get(bl.stated_key("HH-1", "2026-01"))
    assert bq.query(state, "HH-1", "2026-01") == {
        "household_id": "HH-1",
        "month": "2026-01",
        "eligible_cents": 50_000,
        "rate_bp": 300,
        "bonus_cents": 1500,
        "payment_benefit_eligible_cents": 45_000,
        "payment_benefit_cents": 225,
        "receipt_count": 3,
        "members": {"CUST-1": 40_000, "CUST-2": 10_000},
        "closed": True,
        "statements": [HH1_JAN, correction],
    }
    assert bq.query(state, "HH-3", "2026-02") == {
        "household_id": "HH-3",
        "month": "2026-02",
        "eligible_cents": 1_000,
        "rate_bp": 0,
        "bonus_cents": 0,
        "payment_benefit_eligible_cents": 1_000,
        "payment_benefit_cents": 5,
        "receipt_count": 1,
        "members": {"CUST-1": 1_000},
        "closed": False,
        "statements": [],
    }
    assert bq.query(state, "HH-1", "2026-03") is None
    assert bq.query(state, "HH-1|2026-01", "x") is None


# --- the records match the Avro schemas -----------------------------------------------------


def test_emitted_records_encode_with_the_avro_schemas() -> None:
    state = MemoryState()
    results = [feed(state, total("R-1", 40_000), JAN), tick(state, JAN_CLOSE)]
    results.append(feed(state, total("R-2", 1_000, cid="CUST-2"), JAN_CLOSE + 1))
    names = {"household.bonus": "BonusTally", "bonus.statements": "BonusStatement"}
    seen: set[str] = set()
    for result in results:
        for e in result.emits:
            schema = schemas.schema(f"fi.coop.purchase.{names[e.topic]}")
            out = io.BytesIO()
            fastavro.schemaless_writer(out, schema, e.value)
            out.seek(0)
            assert fastavro.schemaless_reader(out, schema) == e.value
            seen.add(e.topic)
    assert seen == set(names)


# --- config ----------------------------------------------------------------------------------


def test_pipeline_toml_has_the_common_table() -> None:
    with CONFIG.open("rb") as f:
        rules = Rules.from_dict(tomllib.load(f))
    assert rules.bonus_tiers == DEFAULT_BONUS_TIERS
    assert (rules.payment_benefit_bp, rules.payment_benefit_method) == (50, OWN)
    assert (rules.bonus_close_day, rules.bonus_dedupe_window_ms) == (10, 35 * DAY_MS)


@pytest.mark.parametrize(
    "bonus",
    [
        {"tiers": [[5000, 100], [5000, 150]]},  # not ascending
        {"tiers": [[5000, 1.5]]},  # not integer basis points
        {"tiers": []},
        {"close_day": 31},
        {"payment_benefit_bp": -1},
    ],
)
def test_bad_bonus_config_is_refused(bonus: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Rules.from_dict({"bonus": bonus})


# --- property: every tally equals an independent computation ---------------------------------

# The docs/domain.md §4 table in euros and percent, computed with decimals (not integers).
TABLE = [(50, "1"), (200, "1.5"), (300, "2"), (400, "2.5"), (500, "3"), (600, "3.5"),
         (700, "4"), (800, "4.5"), (900, "5")]  # fmt: skip


def expected_figures(receipts: list[dict[str, Any]]) -> dict[str, Any]:
    eligible = sum(r["bonus_eligible_cents"] for r in receipts)
    euros = Decimal(max(eligible, 0)) / 100
    percent = Decimal(0)
    for threshold, pct in TABLE:
        if euros >= threshold:
            percent = Decimal(pct)
    cent = Decimal(1)
    bonus = (euros * percent).quantize(cent, ROUND_HALF_UP)  # euros x percent = cents
    base = sum(
        r["bonus_eligible_cents"]
        for r in receipts
        if r["payment_method"] == OWN and r["chain"] != "PARTNER"
    )
    benefit = (Decimal(max(base, 0)) * Decimal("0.005")).quantize(cent, ROUND_HALF_UP)
    members: dict[str, int] = {}
    for r in receipts:
        members[r["customer_id"]] = members.get(r["customer_id"], 0) + r["bonus_eligible_cents"]
    return {
        "eligible_cents": eligible,
        "receipt_count": len(receipts),
        "rate_bp": int(percent * 100),
        "bonus_cents": int(bonus),
        "payment_benefit_eligible_cents": base,
        "payment_benefit_cents": int(benefit),
        "members": dict(sorted(members.items())),
    }


def helsinki_month(epoch_ms: int) -> str:
    # Independent of the stage: the EU rule (last Sundays of March and October, 01:00 UTC).
    t = datetime.fromtimestamp(epoch_ms / 1000, UTC)

    def last_sunday(month: int) -> datetime:
        d = datetime(t.year, month, 31, 1, tzinfo=UTC)
        return d - timedelta(days=(d.weekday() + 1) % 7)

    summer = last_sunday(3) <= t < last_sunday(10)
    return (t + timedelta(hours=3 if summer else 2)).strftime("%Y-%m")


def test_random_receipts_match_an_independent_computation() -> None:
    rng = random.Random(20260115)
    households = [f"HH-{i:03d}" for i in range(40)]
    members = {hh: [f"{hh}-C{j}" for j in range(rng.randint(1, 4))] for hh in households}
    start = utc_ms(2025, 12, 20)
    stream: list[dict[str, Any]] = []
    for n in range(3000):
        hh = rng.choice(households)
        at = start + rng.randrange(0, 100 * DAY_MS)  # late December .. late March
        cents = rng.choice([rng.randint(1, 30_000), rng.randint(0, 999), -rng.randint(1, 10_000)])
        stream.append(
            total(
                f"R-{n}",
                cents,
                hh=hh,
                cid=rng.choice(members[hh]),
                at=at,
                chain=rng.choice(["S_MARKET", "PRISMA", "HOTEL", "PARTNER"]),
                payment=rng.choice([OWN, OWN, "GIFT_CARD", "OTHER_CARD", "CASH"]),
            )
        )
    # Deliver in purchase order with delays (so some arrive after their month closed), and
    # redeliver about one in ten.
    deliveries = [(r["purchased_at"] + rng.choice([0, HOUR_MS, 12 * DAY_MS, 40 * DAY_MS]), r)
                  for r in stream]  # fmt: skip
    deliveries += [(t + rng.randint(1, 30 * DAY_MS), r) for t, r in rng.sample(deliveries, 300)]
    deliveries.sort(key=lambda d: (d[0], d[1]["receipt_id"]))

    state = MemoryState()
    last_tally: dict[str, dict[str, Any]] = {}  # the compacted household.bonus topic
    issued: dict[str, dict[str, Any]] = {}  # the bonus.statements topic, by key
    duplicates = 0

    def collect(result: StepResult) -> None:
        for e in result.emits:
            assert e.key is not None and e.value is not None
            if e.topic == "household.bonus":
                last_tally[e.key] = e.value
            else:
                # A statement sent again (for a duplicate) is identical to the first sending.
                assert issued.setdefault(e.key, e.value) == e.value

    for now, r in deliveries:
        result = feed(state, r, now)
        duplicates += result.events["duplicate"]
        collect(result)
    collect(tick(state, utc_ms(2026, 6, 1)))  # close everything
    assert duplicates == 300

    by_month: dict[str, list[dict[str, Any]]] = {}
    for r in stream:
        hh_month = f"{r['household_id']}|{helsinki_month(r['purchased_at'])}"
        by_month.setdefault(hh_month, []).append(r)
    assert len(by_month) > 100
    assert set(last_tally) == set(by_month)
    by_hh_month: dict[str, list[dict[str, Any]]] = {}
    for key, value in sorted(issued.items(), key=lambda kv: kv[1]["seq"]):
        by_hh_month.setdefault(key.rsplit("|", 1)[0], []).append(value)
    assert set(by_hh_month) == set(by_month)
    corrected = 0
    for hh_month, receipts in by_month.items():
        want = expected_figures(receipts)
        hh, month = hh_month.split("|")
        got = bq.query(state, hh, month)
        assert got is not None
        assert {k: got[k] for k in want} == want, hh_month
        emitted = last_tally[hh_month]
        members = {m["customer_id"]: m["eligible_cents"] for m in emitted["members"]}
        assert {**emitted, "members": members} == {**want, **emitted, "members": want["members"]}
        assert emitted["closed"] is True
        # The statements: seq 0, 1, ...; the last states the final figures and the deltas add
        # up to them.
        sent = by_hh_month[hh_month]
        assert got["statements"] == sent
        assert [s["seq"] for s in sent] == list(range(len(sent)))
        assert [s["kind"] for s in sent] == ["STATEMENT"] + ["CORRECTION"] * (len(sent) - 1)
        assert sent[-1]["bonus_cents"] == want["bonus_cents"]
        assert sent[-1]["payment_benefit_cents"] == want["payment_benefit_cents"]
        assert sum(s["delta_bonus_cents"] for s in sent) == want["bonus_cents"]
        assert sum(s["delta_payment_benefit_cents"] for s in sent) == want["payment_benefit_cents"]
        corrected += len(sent) > 1
    assert corrected > 10  # the delays did produce late receipts
    assert_dedupe_consistent(state)


def test_replay_of_the_same_input_gives_the_same_output() -> None:
    def once() -> list[Emit]:
        state = MemoryState()
        out: list[Emit] = []
        for i in range(30):
            at = JAN + i * 2 * DAY_MS
            out += feed(state, total(f"R-{i}", 1_000 * i, hh=f"HH-{i % 3}", at=at), at + 1).emits
        out += tick(state, utc_ms(2026, 6, 1)).emits
        return out

    assert once() == once()


def test_rocksdb_state_gives_the_same_output(tmp_path: Path) -> None:
    # Values go through JSON in RocksDB (and in the worker's table); nothing may depend on
    # MemoryState keeping Python objects.
    from stream.engine.state import RocksState

    rocks = RocksState(tmp_path / "bonus")
    memory = MemoryState()
    inputs = [
        (total("R-1", 40_000), JAN),
        (total("R-2", 5_000, cid="CUST-2", payment="CASH"), JAN + 1),
        (total("R-1", 40_000), JAN + 2),  # duplicate
        (total("R-3", 1_000, at=FEB), FEB),
        (total("R-4", 5_000, cid="CUST-2"), JAN_CLOSE + 1),  # closes January, then corrects
        (total("R-4", 5_000, cid="CUST-2"), JAN_CLOSE + 2),  # duplicate of the correction
    ]
    for value, now in inputs:
        assert run(hb, rocks, "receipts.totals", "HH-1", value, now) == feed(memory, value, now)  # type: ignore[arg-type]
    end = utc_ms(2026, 6, 1)
    assert run(lambda c, s, *_: hb.tick(c, s), rocks, "", None, None, end) == tick(memory, end)  # type: ignore[arg-type]
    assert dict(rocks.items("")) == memory.data
    assert bq.query(rocks, "HH-1", "2026-01") == bq.query(memory, "HH-1", "2026-01")
    rocks.close()
