"""Receipt, card and consent checks: what becomes a dead letter and what is accepted.

The spec: docs/domain.md §1 (chains, total-only stray lines), §4 (returns, eligibility) and the
Receipt schema (units PCS/KG, line numbers from 1). A rejected record is a dead letter with a
bounded reason code; nothing about it is stored or emitted.
"""

from __future__ import annotations

import pytest

from tests.unit.topo_helpers import (
    GTIN_APPLE,
    GTIN_BEER,
    GTIN_MILK,
    RULES,
    T0,
    card,
    consent,
    identified,
    line,
    receipt,
    run,
    stored,
)
from topologies import card_join, personal_routing
from topologies.state import MemoryState
from topologies.validation import check_receipt


def check(r: dict, *, product_level: bool):
    """check_receipt with a broker timestamp one second after the purchase."""
    return check_receipt(
        r, product_level=product_level, now_ms=r["purchased_at"] + 1_000, rules=RULES
    )


def codes(result) -> list[str]:
    return [r.code for r in result.rejects]


# --- check_receipt ------------------------------------------------------------------------


def test_valid_product_level_receipt_passes() -> None:
    assert check(receipt(), product_level=True) is None


def test_lines_not_adding_up_to_total_rejected_at_product_level_chain() -> None:
    r = receipt(total_cents=834)  # lines sum to 833
    problem = check(r, product_level=True)
    assert problem is not None
    assert problem.code == "lines_total_mismatch"


def test_eligible_lines_not_adding_up_rejected_at_product_level_chain() -> None:
    r = receipt(bonus_eligible_cents=433)  # eligible lines sum to 434
    problem = check(r, product_level=True)
    assert problem is not None
    assert problem.code == "lines_eligible_mismatch"


def test_total_only_chain_is_not_held_to_its_stray_lines() -> None:
    # A hotel till sends lines anyway; they are dropped, so they cannot invalidate the total.
    r = receipt(chain="HOTEL", total_cents=5000, bonus_eligible_cents=4000)
    assert check(r, product_level=False) is None


def test_total_only_chain_stray_lines_cannot_make_the_receipt_invalid() -> None:
    # docs/domain.md §1: for a total-only chain stray lines are dropped; "the outlet name and
    # the total are kept". A malformed stray line must therefore not lose the total record.
    stray = [
        line(1, GTIN_MILK, 100, unit="LTR"),
        line(1, "", 100),
    ]
    r = receipt(chain="HOTEL", lines=stray, total_cents=5000, bonus_eligible_cents=5000)
    assert check(r, product_level=False) is None


def test_return_with_original_receipt_id_accepted() -> None:
    r = receipt(
        "R-RET-1",
        lines=[line(1, GTIN_MILK, -189), line(2, GTIN_BEER, -399, bonus_eligible=False)],
        original_receipt_id="R-0001",
    )
    assert r["total_cents"] == -588
    assert r["bonus_eligible_cents"] == -189
    assert check(r, product_level=True) is None


def test_return_without_original_receipt_id_rejected() -> None:
    r = receipt("R-RET-1", lines=[line(1, GTIN_MILK, -189)], original_receipt_id=None)
    problem = check(r, product_level=True)
    assert problem is not None
    assert problem.code == "return_without_original"


def test_return_without_original_rejected_at_total_only_chain_too() -> None:
    r = receipt("R-RET-2", chain="HOTEL", lines=[], total_cents=-1000, bonus_eligible_cents=-1000)
    problem = check(r, product_level=False)
    assert problem is not None
    assert problem.code == "return_without_original"


@pytest.mark.parametrize("unit", ["LTR", "pcs", "", "G"])
def test_bad_unit_rejected(unit: str) -> None:
    r = receipt(lines=[line(1, GTIN_MILK, 189, unit=unit)])
    problem = check(r, product_level=True)
    assert problem is not None
    assert problem.code == "bad_unit"


@pytest.mark.parametrize("unit", ["PCS", "KG"])
def test_known_units_accepted(unit: str) -> None:
    r = receipt(lines=[line(1, GTIN_APPLE, 245, unit=unit, quantity_milli=850)])
    assert check(r, product_level=True) is None


def test_duplicate_line_no_rejected() -> None:
    r = receipt(lines=[line(1, GTIN_MILK, 189), line(1, GTIN_APPLE, 245)])
    problem = check(r, product_level=True)
    assert problem is not None
    assert problem.code == "duplicate_line_no"


def test_empty_gtin_rejected() -> None:
    r = receipt(lines=[line(1, "", 189)])
    problem = check(r, product_level=True)
    assert problem is not None
    assert problem.code == "missing_gtin"


@pytest.mark.parametrize("field", ["receipt_id", "store_id", "card_number"])
def test_pipe_in_identifier_rejected(field: str) -> None:
    r = receipt()
    r[field] = "A|B"
    problem = check(r, product_level=True)
    assert problem is not None
    assert problem.code == "bad_identifier"


@pytest.mark.parametrize(
    ("field", "code"), [("receipt_id", "missing_receipt_id"), ("store_id", "missing_store_id")]
)
def test_empty_ids_rejected(field: str, code: str) -> None:
    r = receipt()
    r[field] = ""
    problem = check(r, product_level=True)
    assert problem is not None
    assert problem.code == code


def test_unknown_payment_method_rejected() -> None:
    problem = check(receipt(payment_method="BITCOIN"), product_level=True)
    assert problem is not None
    assert problem.code == "bad_payment_method"


@pytest.mark.parametrize(
    ("total", "eligible"), [(1000, 1001), (1000, -1), (-1000, -1001), (-1000, 1)]
)
def test_eligible_outside_total_rejected(total: int, eligible: int) -> None:
    r = receipt(
        chain="HOTEL",
        lines=[],
        total_cents=total,
        bonus_eligible_cents=eligible,
        original_receipt_id="R-0000" if total < 0 else None,
    )
    problem = check(r, product_level=False)
    assert problem is not None
    assert problem.code == "eligible_exceeds_total"


@pytest.mark.parametrize("purchased_at", [0, -1])
def test_non_positive_timestamp_rejected(purchased_at: int) -> None:
    problem = check(receipt(purchased_at=purchased_at), product_level=True)
    assert problem is not None
    assert problem.code == "bad_timestamp"


# --- stage 1: a rejected receipt leaves no trace ------------------------------------------


@pytest.mark.parametrize(
    ("r", "code"),
    [
        (receipt(total_cents=834), "lines_total_mismatch"),
        (receipt(bonus_eligible_cents=0), "lines_eligible_mismatch"),
        (receipt(lines=[line(1, GTIN_MILK, -189)]), "return_without_original"),
        (receipt(lines=[line(1, GTIN_MILK, 189, unit="L")]), "bad_unit"),
        (receipt(lines=[line(2, GTIN_MILK, 1), line(2, GTIN_BEER, 2)]), "duplicate_line_no"),
        (receipt(receipt_id="R|1"), "bad_identifier"),
    ],
)
def test_rejected_receipt_is_not_stored_or_emitted(r: dict, code: str) -> None:
    state = MemoryState()
    # The card is unknown: a valid receipt would be parked; a rejected one must not be.
    result = run(card_join, state, "pos.receipts", r["card_number"], r, T0)
    assert codes(result) == [code]
    assert result.emits == []
    assert stored(state, "park|") == {}


def test_rejected_receipt_for_known_card_not_forwarded() -> None:
    state = MemoryState()
    c = card()
    run(card_join, state, "customer.cards", c["card_number"], c, T0)
    r = receipt(total_cents=834)
    result = run(card_join, state, "pos.receipts", r["card_number"], r, T0 + 1)
    assert codes(result) == ["lines_total_mismatch"]
    assert result.emits == []


def test_anonymous_rejected_receipt_feeds_no_aggregate() -> None:
    state = MemoryState()
    r = receipt(card_number=None, lines=[line(1, GTIN_MILK, 189, unit="BOX")])
    result = run(card_join, state, "pos.receipts", None, r, T0)
    assert codes(result) == ["bad_unit"]
    assert result.emits == []


def test_return_accepted_and_forwarded_with_negative_amounts() -> None:
    state = MemoryState()
    c = card()
    run(card_join, state, "customer.cards", c["card_number"], c, T0)
    r = receipt(
        "R-RET-1",
        lines=[line(1, GTIN_MILK, -189)],
        original_receipt_id="R-0001",
    )
    result = run(card_join, state, "pos.receipts", r["card_number"], r, T0 + 1)
    assert result.rejects == []
    assert [(e.topic, e.key) for e in result.emits] == [
        ("aggregates.contributions", "STORE-01"),
        ("receipts.identified", "CUST-0001"),
    ]
    assert result.emits[1].value == identified(r, c)
    assert result.emits[0].value["total_cents"] == -189


def test_carded_receipt_with_wrong_key_rejected_and_not_parked() -> None:
    state = MemoryState()
    r = receipt(card_number="CARD-0001")
    result = run(card_join, state, "pos.receipts", "CARD-9999", r, T0)
    assert codes(result) == ["key_mismatch"]
    assert result.emits == []
    assert stored(state, "park|") == {}


def test_unknown_chain_lines_not_adding_up_accepted_as_total_only() -> None:
    state = MemoryState()
    r = receipt(card_number=None, chain="NEW_CHAIN", total_cents=10_000, bonus_eligible_cents=0)
    result = run(card_join, state, "pos.receipts", None, r, T0)
    assert result.rejects == []
    assert [e.topic for e in result.emits] == ["aggregates.contributions"]
    assert result.emits[0].value["total_cents"] == 10_000
    assert result.emits[0].value["groups"] == []


def test_total_only_receipt_with_malformed_stray_lines_keeps_its_total() -> None:
    # docs/domain.md §1: stray lines of a total-only chain are dropped; the total is kept.
    state = MemoryState()
    c = card()
    run(card_join, state, "customer.cards", c["card_number"], c, T0)
    r = receipt(
        chain="HOTEL",
        lines=[line(1, GTIN_MILK, 100, unit="LTR"), line(1, GTIN_BEER, 100)],
        total_cents=12_000,
        bonus_eligible_cents=12_000,
    )
    result = run(card_join, state, "pos.receipts", r["card_number"], r, T0 + 1)
    assert result.rejects == []
    assert [e.topic for e in result.emits] == ["aggregates.contributions", "receipts.identified"]
    assert result.emits[1].value == identified({**r, "lines": []}, c)


# --- cards and consents -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "c", "code"),
    [
        ("CARD-0002", card("CARD-0001"), "key_mismatch"),
        ("CARD-0001", card("CARD-0001", customer_id="CUST|1"), "bad_identifier"),
        ("CARD-0001", card("CARD-0001", household_id="HH|1"), "bad_identifier"),
        ("CARD|1", card("CARD|1"), "bad_identifier"),
        ("CARD-0001", card("CARD-0001", role="OWNER"), "bad_role"),
        (None, card(), "missing_key"),
    ],
)
def test_bad_card_record_rejected_and_not_stored(key, c, code) -> None:
    state = MemoryState()
    result = run(card_join, state, "customer.cards", key, c, T0)
    assert codes(result) == [code]
    assert stored(state, "card|") == {}


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        ("CUST-0002", consent("CUST-0001"), "key_mismatch"),
        ("CUST|0001", consent("CUST|0001"), "bad_identifier"),
        ("CUST|0001", None, "bad_identifier"),
        (None, consent(), "missing_key"),
    ],
)
def test_bad_consent_record_rejected_and_not_stored(key, value, code) -> None:
    state = MemoryState()
    result = run(personal_routing, state, "customer.consents", key, value, T0)
    assert codes(result) == [code]
    assert state.data == {}
    assert result.emits == []


def test_identified_receipt_keyed_by_other_customer_rejected() -> None:
    state = MemoryState()
    value = identified(receipt(), card())
    result = run(personal_routing, state, "receipts.identified", "CUST-9999", value, T0)
    assert codes(result) == ["key_mismatch"]
    assert result.emits == []
    assert state.data == {}


def test_rules_from_config_fail_closed_for_unlisted_chains() -> None:
    from stream.settings import load_rules

    rules = load_rules()
    assert rules.is_product_level("PRISMA") is True
    assert rules.is_product_level("S_MARKET") is True
    assert rules.is_product_level("HOTEL") is False
    assert rules.is_product_level("RESTAURANT") is False
    assert rules.is_product_level("PARTNER") is False
    assert rules.is_product_level("SOMETHING_NEW") is False
    assert RULES.is_product_level("prisma") is False
