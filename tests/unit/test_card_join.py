"""Stage 1 (card join): anonymous receipts, known cards, parking, closed cards, chains.

Spec: docs/domain.md §1 (chains; total-only stray lines dropped before anything is stored) and §3.1
(a receipt without a known card is anonymous: it only feeds group aggregates, and no personal
data is stored anywhere), §3.5 (group aggregates for every receipt, no person identifiers).
"""

from __future__ import annotations

import json

import pytest

from tests.unit.topo_helpers import (
    DAY_MS,
    GTIN_APPLE,
    GTIN_BEER,
    GTIN_MILK,
    HOUR_MS,
    RULES,
    T0,
    card,
    identified,
    line,
    link,
    receipt,
    stored,
    topics,
    utc_ms,
)
from tests.unit.topo_helpers import (
    run as _run,
)
from topologies import card_join
from topologies.context import no_catalog
from topologies.records import Origin, Reject
from topologies.rules import Rules
from topologies.state import MemoryState

WINDOW = RULES.park_window_ms

# The default receipt's lines grouped by the default catalogue, sorted by group.
DEFAULT_GROUPS = [
    {"product_group": "ALCOHOL", "amount_cents": 399, "quantity_milli": 1000, "line_count": 1},
    {"product_group": "DAIRY", "amount_cents": 189, "quantity_milli": 1000, "line_count": 1},
    {"product_group": "FRUIT", "amount_cents": 245, "quantity_milli": 850, "line_count": 1},
]


def run(stage, state, topic, key, value, now_ms, **kw):  # type: ignore[no-untyped-def]
    """topo_helpers.run without the register's propagation records (test_card_register.py
    checks those): these tests are about receipts and the card table."""
    result = _run(stage, state, topic, key, value, now_ms, **kw)
    result.emits[:] = [e for e in result.emits if not e.topic.startswith("register.")]
    return result


def contribution(r: dict, date: str = "2024-03-05", groups: list | None = None) -> dict:
    return {
        "receipt_id": r["receipt_id"],
        "store_id": r["store_id"],
        "chain": r["chain"],
        "date": date,
        "total_cents": r["total_cents"],
        "groups": DEFAULT_GROUPS if groups is None else groups,
    }


def non_meta(state: MemoryState) -> dict:
    return {k: v for k, v in state.data.items() if not k.startswith("meta|")}


def with_card(c: dict | None = None, now: int = T0 - DAY_MS) -> MemoryState:
    state = MemoryState()
    c = c or card()
    result = run(card_join, state, "customer.cards", c["card_number"], c, now)
    assert result.rejects == []
    return state


# --- anonymous receipts -------------------------------------------------------------------


def test_receipt_without_card_only_feeds_group_aggregates() -> None:
    state = MemoryState()
    r = receipt(card_number=None)
    result = run(card_join, state, "pos.receipts", None, r, T0)
    assert result.rejects == []
    assert topics(result) == ["aggregates.contributions"]
    assert result.emits[0].key == "STORE-01"
    assert result.emits[0].value == contribution(r)
    assert result.events["anonymous"] == 1
    # No personal data is stored anywhere (only the sweep schedule).
    assert non_meta(state) == {}


def test_receipt_with_closed_card_is_anonymous() -> None:
    c = card()
    state = with_card(c)
    run(card_join, state, "customer.cards", c["card_number"], None, T0 - HOUR_MS)
    r = receipt()
    result = run(card_join, state, "pos.receipts", r["card_number"], r, T0)
    assert result.rejects == []
    assert topics(result) == ["aggregates.contributions"]
    assert result.emits[0].value == contribution(r)
    # Nothing about the receipt is kept; the card's history says it is closed since then.
    assert list(non_meta(state)) == ["card|CARD-0001"]
    assert state.get("card|CARD-0001")["h"][-1] == [T0 - HOUR_MS, None]


def test_closed_card_contribution_has_no_person_identifiers() -> None:
    c = card("CARD-7777", "CUST-7777", "HH-7777")
    state = with_card(c)
    run(card_join, state, "customer.cards", "CARD-7777", None, T0 - HOUR_MS)
    r = receipt(card_number="CARD-7777")
    result = run(card_join, state, "pos.receipts", "CARD-7777", r, T0)
    text = json.dumps([e.value for e in result.emits])
    for ident in ("CARD-7777", "CUST-7777", "HH-7777"):
        assert ident not in text


def test_reopened_card_identifies_again() -> None:
    c = card()
    state = with_card(c)
    run(card_join, state, "customer.cards", c["card_number"], None, T0 - 2 * HOUR_MS)
    run(card_join, state, "customer.cards", c["card_number"], c, T0 - HOUR_MS)
    r = receipt()
    result = run(card_join, state, "pos.receipts", r["card_number"], r, T0)
    assert topics(result) == ["aggregates.contributions", "receipts.identified"]


# --- known cards --------------------------------------------------------------------------


def test_known_card_forwarded_keyed_by_customer() -> None:
    c = card("CARD-0001", "CUST-0001", "HH-0001", "MEMBER")
    state = with_card(c)
    r = receipt()
    result = run(card_join, state, "pos.receipts", "CARD-0001", r, T0)
    assert result.rejects == []
    assert [(e.topic, e.key) for e in result.emits] == [
        ("aggregates.contributions", "STORE-01"),
        ("receipts.identified", "CUST-0001"),
    ]
    assert result.emits[0].value == contribution(r)
    assert result.emits[1].value == {
        "receipt": r,
        "card": {
            "card_number": "CARD-0001",
            "customer_id": "CUST-0001",
            "household_id": "HH-0001",
            "role": "MEMBER",
        },
    }


def test_contribution_of_carded_receipt_has_no_person_identifiers() -> None:
    c = card("CARD-5555", "CUST-5555", "HH-5555")
    state = with_card(c)
    r = receipt(card_number="CARD-5555")
    result = run(card_join, state, "pos.receipts", "CARD-5555", r, T0)
    (contrib,) = [e for e in result.emits if e.topic == "aggregates.contributions"]
    assert contrib.key == "STORE-01"
    text = json.dumps(contrib.value)
    for ident in ("CARD-5555", "CUST-5555", "HH-5555"):
        assert ident not in text
    assert set(contrib.value) == {
        "receipt_id",
        "store_id",
        "chain",
        "date",
        "total_cents",
        "groups",
    }


def test_lines_without_catalogue_entry_grouped_as_unknown() -> None:
    state = MemoryState()
    r = receipt(card_number=None)
    result = run(card_join, state, "pos.receipts", None, r, T0, catalog=no_catalog)
    assert result.emits[0].value["groups"] == [
        {"product_group": "UNKNOWN", "amount_cents": 833, "quantity_milli": 2850, "line_count": 3}
    ]


# --- chains -------------------------------------------------------------------------------


@pytest.mark.parametrize("chain", ["HOTEL", "RESTAURANT", "PARTNER", "NOT_IN_CONFIG"])
def test_total_only_and_unknown_chain_lines_dropped(chain: str) -> None:
    c = card()
    state = with_card(c)
    r = receipt(chain=chain, total_cents=4_200, bonus_eligible_cents=4_000)
    result = run(card_join, state, "pos.receipts", r["card_number"], r, T0)
    assert result.rejects == []
    assert topics(result) == ["aggregates.contributions", "receipts.identified"]
    assert result.emits[0].value == contribution({**r}, groups=[])
    assert result.emits[1].value == identified({**r, "lines": []}, c)
    assert result.emits[1].value["receipt"]["total_cents"] == 4_200
    assert result.emits[1].value["receipt"]["store_id"] == "STORE-01"


def test_unknown_chain_fails_closed_with_rules_from_config() -> None:
    from stream.settings import load_rules

    rules = load_rules()
    c = card()
    state = MemoryState()
    run(card_join, state, "customer.cards", c["card_number"], c, T0 - 1, rules=rules)
    r = receipt(chain="KESKO", total_cents=900, bonus_eligible_cents=900)
    result = run(card_join, state, "pos.receipts", r["card_number"], r, T0, rules=rules)
    assert result.emits[1].value["receipt"]["lines"] == []
    r2 = receipt("R-0002", chain="PRISMA")
    result = run(card_join, state, "pos.receipts", r2["card_number"], r2, T0 + 1, rules=rules)
    assert result.emits[1].value["receipt"]["lines"] == r2["lines"]


def test_total_only_stray_lines_not_stored_while_parked() -> None:
    # docs/domain.md §1: stray lines of a total-only chain are dropped *before anything is stored*;
    # a parked receipt is stored (in the stage's state and its changelog).
    state = MemoryState()
    r = receipt(chain="HOTEL", total_cents=7_000, bonus_eligible_cents=7_000)
    result = run(card_join, state, "pos.receipts", r["card_number"], r, T0)
    assert result.events["parked"] == 1
    (parked,) = stored(state, "park|").values()
    assert parked["receipt"]["lines"] == []
    assert parked["receipt"]["total_cents"] == 7_000


def test_total_only_stray_lines_released_without_lines() -> None:
    state = MemoryState()
    r = receipt(chain="PARTNER", total_cents=7_000, bonus_eligible_cents=0)
    run(card_join, state, "pos.receipts", r["card_number"], r, T0)
    c = card()
    result = run(card_join, state, "customer.cards", c["card_number"], c, T0 + HOUR_MS)
    assert topics(result) == ["aggregates.contributions", "receipts.identified"]
    assert result.emits[1].value == identified({**r, "lines": []}, c)
    assert result.emits[0].value["groups"] == []


# --- parking ------------------------------------------------------------------------------


def park(state: MemoryState, r: dict, now: int, offset: int = 42) -> None:
    result = run(
        card_join,
        state,
        "pos.receipts",
        r["card_number"],
        r,
        now,
        partition=3,
        offset=offset,
        raw_key=r["card_number"].encode(),
        raw_value=b"\x00\x00\x00\x00\x07" + r["receipt_id"].encode() + b"\xff",
    )
    assert result.emits == []
    assert result.rejects == []
    assert result.events["parked"] == 1


def test_receipt_for_unknown_card_is_parked_without_emits() -> None:
    state = MemoryState()
    park(state, receipt(), T0)
    assert list(stored(state, "park|")) == ["park|CARD-0001|R-0001"]


def test_parked_receipt_released_with_the_card_that_arrives() -> None:
    state = MemoryState()
    r = receipt()
    park(state, r, T0)
    c = card("CARD-0001", "CUST-0042", "HH-0042", "MEMBER")
    result = run(card_join, state, "customer.cards", "CARD-0001", c, T0 + HOUR_MS)
    assert result.rejects == []
    assert result.events["released"] == 1
    assert [(e.topic, e.key) for e in result.emits] == [
        ("aggregates.contributions", "STORE-01"),
        ("receipts.identified", "CUST-0042"),
    ]
    assert result.emits[0].value == contribution(r)
    assert result.emits[1].value == {"receipt": r, "card": link(c)}
    assert stored(state, "park|") == {}
    assert stored(state, "card|") == {"card|CARD-0001": {"v": None, "h": [[T0 + HOUR_MS, link(c)]]}}


def test_several_parked_receipts_for_one_card_all_released() -> None:
    state = MemoryState()
    mine = [receipt(f"R-000{i}", purchased_at=T0 + i) for i in (1, 2, 3)]
    other = receipt("R-0009", card_number="CARD-0002")
    for i, r in enumerate(mine):
        park(state, r, T0 + i, offset=i)
    park(state, other, T0 + 5)
    c = card()
    result = run(card_join, state, "customer.cards", c["card_number"], c, T0 + HOUR_MS)
    assert result.events["released"] == 3
    released = [e.value for e in result.emits if e.topic == "receipts.identified"]
    assert released == [identified(r, c) for r in mine]
    assert [
        e.value["receipt_id"] for e in result.emits if e.topic == "aggregates.contributions"
    ] == [
        "R-0001",
        "R-0002",
        "R-0003",
    ]
    # The other card's receipt is still waiting for its own card.
    assert list(stored(state, "park|")) == ["park|CARD-0002|R-0009"]


def test_same_receipt_parked_twice_released_once() -> None:
    state = MemoryState()
    r = receipt()
    park(state, r, T0)
    park(state, r, T0 + 1)
    c = card()
    result = run(card_join, state, "customer.cards", c["card_number"], c, T0 + HOUR_MS)
    assert topics(result) == ["aggregates.contributions", "receipts.identified"]


def test_parked_receipt_not_expired_before_the_window() -> None:
    state = MemoryState()
    park(state, receipt(), T0)
    # Any record makes the partition sweep (the first sweep was due an hour after T0).
    result = run(
        card_join, state, "customer.cards", "CARD-0002", card("CARD-0002"), T0 + WINDOW - 1
    )
    assert result.rejects == []
    assert list(stored(state, "park|")) == ["park|CARD-0001|R-0001"]
    # ... and the card can still arrive and release it.
    c = card()
    result = run(card_join, state, "customer.cards", "CARD-0001", c, T0 + WINDOW - 1 + HOUR_MS // 2)
    assert result.events["released"] == 1


def test_parked_receipt_dead_lettered_after_the_window_with_original_bytes() -> None:
    state = MemoryState()
    r = receipt()
    park(state, r, T0, offset=1234)
    now = T0 + WINDOW + HOUR_MS
    result = run(card_join, state, "customer.cards", "CARD-0002", card("CARD-0002"), now)
    assert result.rejects == [
        Reject(
            "card_unknown_timeout",
            "card not in the register within the parking window",
            origin=Origin(
                "pos.receipts",
                3,
                1234,
                b"CARD-0001",
                b"\x00\x00\x00\x00\x07R-0001\xff",
            ),
        )
    ]
    # It still feeds the anonymous group aggregates (docs/domain.md §3.5), and nothing else:
    # no identified receipt, no person identifiers.
    assert [e.topic for e in result.emits] == ["aggregates.contributions"]
    contribution = result.emits[0].value
    assert contribution is not None
    assert contribution["receipt_id"] == "R-0001"
    assert "CARD-0001" not in repr(contribution)
    assert result.events["anonymous"] == 1
    assert stored(state, "park|") == {}
    # The card arriving later finds nothing to release.
    result = run(card_join, state, "customer.cards", "CARD-0001", card(), now + HOUR_MS)
    assert result.events["released"] == 0
    assert result.emits == []


def test_parked_receipt_without_raw_bytes_dead_lettered_with_none() -> None:
    state = MemoryState()
    r = receipt()
    run(card_join, state, "pos.receipts", r["card_number"], r, T0, offset=7)
    result = run(
        card_join, state, "customer.cards", "CARD-0002", card("CARD-0002"), T0 + WINDOW + HOUR_MS
    )
    assert [rej.origin for rej in result.rejects] == [Origin("pos.receipts", 0, 7, None, None)]


def test_only_expired_parked_receipts_are_dead_lettered() -> None:
    state = MemoryState()
    park(state, receipt("R-OLD1"), T0, offset=1)
    park(state, receipt("R-NEW1", card_number="CARD-0003"), T0 + 10 * DAY_MS, offset=2)
    result = run(
        card_join, state, "customer.cards", "CARD-0002", card("CARD-0002"), T0 + WINDOW + HOUR_MS
    )
    assert [(rej.code, rej.origin.offset) for rej in result.rejects] == [
        ("card_unknown_timeout", 1)
    ]
    assert list(stored(state, "park|")) == ["park|CARD-0003|R-NEW1"]


def test_card_closed_while_receipts_parked_releases_them_as_anonymous() -> None:
    # docs/domain.md §3.1: a receipt whose card is not known (here: known to be closed) is anonymous
    # and still feeds group aggregates (§3.5). It must neither be identified nor wait for a
    # card that will never arrive and then be dead-lettered.
    state = MemoryState()
    r1, r2 = receipt("R-0001"), receipt("R-0002")
    park(state, r1, T0, offset=1)
    park(state, r2, T0 + 1, offset=2)
    result = run(card_join, state, "customer.cards", "CARD-0001", None, T0 + HOUR_MS)
    assert result.rejects == []
    assert topics(result) == ["aggregates.contributions", "aggregates.contributions"]
    assert [e.value for e in result.emits] == [contribution(r1), contribution(r2)]
    assert stored(state, "park|") == {}
    # Nothing left to dead-letter later.
    result = run(
        card_join, state, "customer.cards", "CARD-0002", card("CARD-0002"), T0 + 2 * WINDOW
    )
    assert result.rejects == []


def test_parked_receipt_for_closed_card_never_identified() -> None:
    state = MemoryState()
    park(state, receipt(), T0)
    run(card_join, state, "customer.cards", "CARD-0001", None, T0 + HOUR_MS)
    result = run(
        card_join, state, "customer.cards", "CARD-0002", card("CARD-0002"), T0 + 2 * HOUR_MS
    )
    assert [e.topic for e in result.emits] == []


# --- Helsinki calendar --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "date"),
    [
        # winter, UTC+2
        (utc_ms(2024, 1, 15, 21, 59, 59), "2024-01-15"),
        (utc_ms(2024, 1, 15, 22, 0, 0), "2024-01-16"),
        (utc_ms(2024, 1, 15, 23, 30, 0), "2024-01-16"),
        # summer, UTC+3
        (utc_ms(2024, 7, 15, 20, 59, 59), "2024-07-15"),
        (utc_ms(2024, 7, 15, 21, 0, 0), "2024-07-16"),
        (utc_ms(2024, 7, 15, 22, 0, 0), "2024-07-16"),
        # the nights the clocks change (31.3. forward, 27.10. back)
        (utc_ms(2024, 3, 30, 21, 59, 59), "2024-03-30"),
        (utc_ms(2024, 3, 30, 22, 0, 0), "2024-03-31"),
        (utc_ms(2024, 10, 26, 20, 59, 59), "2024-10-26"),
        (utc_ms(2024, 10, 26, 21, 0, 0), "2024-10-27"),
        (utc_ms(2024, 10, 27, 21, 59, 59), "2024-10-27"),
        (utc_ms(2024, 10, 27, 22, 0, 0), "2024-10-28"),
    ],
)
def test_contribution_date_is_the_helsinki_date(at: int, date: str) -> None:
    state = MemoryState()
    r = receipt(card_number=None, purchased_at=at)
    result = run(card_join, state, "pos.receipts", None, r, at + 1)
    assert result.emits[0].value["date"] == date


@pytest.mark.parametrize(
    ("at", "month"),
    [
        (utc_ms(2024, 1, 31, 21, 59, 59), "2024-01"),
        (utc_ms(2024, 1, 31, 22, 0, 0), "2024-02"),
        (utc_ms(2024, 6, 30, 20, 59, 59), "2024-06"),
        (utc_ms(2024, 6, 30, 21, 0, 0), "2024-07"),
        (utc_ms(2024, 12, 31, 22, 0, 0), "2025-01"),
    ],
)
def test_rules_local_month_is_the_helsinki_month(at: int, month: str) -> None:
    assert RULES.local_month(at) == month


def test_rules_zone_from_config_is_helsinki() -> None:
    from stream.settings import load_rules

    rules = load_rules()
    assert rules.local_date(utc_ms(2024, 7, 15, 21, 0, 0)) == "2024-07-16"
    assert Rules(frozenset(), zone="UTC").local_date(utc_ms(2024, 7, 15, 21, 0, 0)) == "2024-07-15"


def test_line_groups_summed_per_product_group() -> None:
    state = MemoryState()
    lines = [
        line(1, GTIN_MILK, 189),
        line(2, GTIN_MILK, 189),
        line(3, GTIN_APPLE, 100, unit="KG", quantity_milli=400),
        line(4, GTIN_BEER, 399, bonus_eligible=False),
    ]
    r = receipt(card_number=None, lines=lines)
    result = run(card_join, state, "pos.receipts", None, r, T0)
    assert result.emits[0].value["groups"] == [
        {"product_group": "ALCOHOL", "amount_cents": 399, "quantity_milli": 1000, "line_count": 1},
        {"product_group": "DAIRY", "amount_cents": 378, "quantity_milli": 2000, "line_count": 2},
        {"product_group": "FRUIT", "amount_cents": 100, "quantity_milli": 400, "line_count": 1},
    ]


@pytest.mark.parametrize("zone", ["Europe/Helsinki", "Asia/Kolkata", "Asia/Kathmandu", "UTC"])
def test_rules_cached_local_date_equals_the_direct_conversion(zone: str) -> None:
    # local_date caches per 15-minute UTC bucket: check every second-before and minute
    # around both DST changes of 2024 and 2025, midnights included, against zoneinfo.
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    rules = Rules(frozenset(), zone=zone)
    tz = ZoneInfo(zone)
    starts = [utc_ms(y, m, d, 0, 0, 0) for y in (2024, 2025) for m, d in ((3, 30), (10, 26))]
    starts += [utc_ms(2024, 12, 31, 0, 0, 0)]
    for start in starts:
        for minute in range(0, 48 * 60):
            for at in (start + minute * 60_000 - 1, start + minute * 60_000):
                expect = datetime.fromtimestamp(at / 1000, UTC).astimezone(tz).strftime("%Y-%m-%d")
                assert rules.local_date(at) == expect, (zone, at)
