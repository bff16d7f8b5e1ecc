"""Stage 3 (group aggregates): store x day x product group, every receipt once, no persons.

Spec: docs/domain.md §3.5 (group aggregates for every receipt, no person identifiers), §4 ("each
receipt counts exactly once, however often it is delivered"; returns are negative receipts).
"""

from __future__ import annotations

import copy
import json

from tests.unit.topo_helpers import (
    DAY_MS,
    GTIN_MILK,
    HOUR_MS,
    RULES,
    T0,
    ChangelogState,
    card,
    cut_and_restore,
    line,
    receipt,
    run,
    stored,
    utc_ms,
)
from topologies import card_join, group_aggregates
from topologies.records import Emit
from topologies.state import MemoryState

WINDOW = RULES.aggregate_dedupe_window_ms


def g(group: str, amount: int, qty: int, count: int) -> dict:
    return {
        "product_group": group,
        "amount_cents": amount,
        "quantity_milli": qty,
        "line_count": count,
    }


def contrib(
    rid: str,
    *,
    store: str = "STORE-01",
    date: str = "2024-03-05",
    chain: str = "S_MARKET",
    total: int = 500,
    groups: list | None = None,
) -> dict:
    return {
        "receipt_id": rid,
        "store_id": store,
        "chain": chain,
        "date": date,
        "total_cents": total,
        "groups": [g("DAIRY", 500, 2000, 2)] if groups is None else groups,
    }


def feed(state: MemoryState, value: dict, now: int):
    return run(group_aggregates, state, "aggregates.contributions", value["store_id"], value, now)


def test_first_receipt_of_the_day() -> None:
    state = MemoryState()
    result = feed(state, contrib("R-1"), T0)
    assert result.rejects == []
    assert result.emits == [
        Emit(
            "aggregates.group",
            "STORE-01|2024-03-05",
            {
                "store_id": "STORE-01",
                "date": "2024-03-05",
                "chain": "S_MARKET",
                "receipt_count": 1,
                "total_cents": 500,
                "groups": [g("DAIRY", 500, 2000, 2)],
            },
        )
    ]


def test_receipts_of_a_store_day_are_summed_per_group() -> None:
    state = MemoryState()
    feed(
        state,
        contrib("R-1", total=700, groups=[g("DAIRY", 500, 2000, 2), g("FRUIT", 200, 850, 1)]),
        T0,
    )
    feed(state, contrib("R-2", total=0, groups=[]), T0 + 1)  # a zero receipt still counts
    result = feed(
        state,
        contrib("R-3", total=450, groups=[g("ALCOHOL", 300, 1000, 1), g("FRUIT", 150, 400, 1)]),
        T0 + 2,
    )
    (emit,) = result.emits
    assert emit.value == {
        "store_id": "STORE-01",
        "date": "2024-03-05",
        "chain": "S_MARKET",
        "receipt_count": 3,
        "total_cents": 1150,
        "groups": [
            g("ALCOHOL", 300, 1000, 1),
            g("DAIRY", 500, 2000, 2),
            g("FRUIT", 350, 1250, 2),
        ],
    }


def test_other_store_or_day_is_another_aggregate() -> None:
    state = MemoryState()
    feed(state, contrib("R-1"), T0)
    r2 = feed(state, contrib("R-2", date="2024-03-06"), T0 + 1)
    r3 = feed(state, contrib("R-3", store="STORE-02"), T0 + 2)
    assert [e.key for e in r2.emits + r3.emits] == ["STORE-01|2024-03-06", "STORE-02|2024-03-05"]
    assert sorted(stored(state, "agg|")) == [
        "agg|STORE-01|2024-03-05",
        "agg|STORE-01|2024-03-06",
        "agg|STORE-02|2024-03-05",
    ]
    assert [e.value["receipt_count"] for e in r2.emits + r3.emits] == [1, 1]


def test_return_reduces_the_day() -> None:
    state = MemoryState()
    feed(state, contrib("R-1", total=500), T0)
    result = feed(state, contrib("R-RET", total=-250, groups=[g("DAIRY", -250, -1000, 1)]), T0 + 1)
    assert result.emits[0].value["total_cents"] == 250
    assert result.emits[0].value["receipt_count"] == 2
    assert result.emits[0].value["groups"] == [g("DAIRY", 250, 1000, 3)]


def test_duplicate_counted_once_and_current_aggregate_resent() -> None:
    state = MemoryState()
    first = feed(state, contrib("R-1"), T0)
    snapshot = copy.deepcopy(state.data)
    again = feed(state, contrib("R-1"), T0 + HOUR_MS)
    assert again.events["duplicate"] == 1
    assert state.data == snapshot
    assert again.emits == first.emits


def test_late_duplicate_does_not_recount() -> None:
    state = MemoryState()
    feed(state, contrib("R-1"), T0)
    feed(state, contrib("R-2"), T0 + 1)
    result = feed(state, contrib("R-1"), T0 + 2 * DAY_MS)
    assert result.emits[0].value["receipt_count"] == 2
    assert result.emits[0].value["total_cents"] == 1000
    assert state.get("agg|STORE-01|2024-03-05")["receipt_count"] == 2


def test_duplicate_delivered_through_stage_1_counted_once() -> None:
    # Stage 1 forwards redeliveries; stage 3 must drop them.
    s1, s3 = MemoryState(), MemoryState()
    r = receipt(card_number=None)
    values = []
    for now in (T0, T0 + 1):
        result = run(card_join, s1, "pos.receipts", None, r, now)
        values += [e.value for e in result.emits if e.topic == "aggregates.contributions"]
    for i, v in enumerate(values):
        feed(s3, v, T0 + 10 + i)
    agg = s3.get("agg|STORE-01|2024-03-05")
    assert agg["receipt_count"] == 1
    assert agg["total_cents"] == 833


def test_dedupe_mark_kept_within_the_window() -> None:
    state = MemoryState()
    feed(state, contrib("R-1"), T0)
    feed(state, contrib("R-2"), T0 + WINDOW - 1)  # sweeps
    assert state.get("seen|R-1") == T0
    result = feed(state, contrib("R-1"), T0 + WINDOW - 1)
    assert result.events["duplicate"] == 1
    assert state.get("agg|STORE-01|2024-03-05")["receipt_count"] == 2


def test_dedupe_marks_expire_after_the_window() -> None:
    state = MemoryState()
    t1 = utc_ms(2024, 3, 5, 10)
    feed(state, contrib("R-1"), t1)
    t2 = t1 + 20 * DAY_MS
    feed(state, contrib("R-2"), t2)
    later = t1 + WINDOW + DAY_MS + HOUR_MS
    result = feed(state, contrib("R-3", date="2024-04-11"), later)
    assert result.events["dedupe_expired"] == 1
    seen = {k for k in state.data if k.startswith(("seen|", "seenx|"))}
    assert seen == {
        "seen|R-2",
        f"seenx|{t2 // DAY_MS:08d}|R-2",
        "seen|R-3",
        f"seenx|{later // DAY_MS:08d}|R-3",
    }
    # The aggregates themselves are kept (no person data; docs/domain.md §7).
    assert sorted(stored(state, "agg|")) == ["agg|STORE-01|2024-03-05", "agg|STORE-01|2024-04-11"]


def test_tombstone_contribution_rejected() -> None:
    state = MemoryState()
    result = run(group_aggregates, state, "aggregates.contributions", "STORE-01", None, T0)
    assert [r.code for r in result.rejects] == ["missing_value"]
    assert state.data == {}


def test_no_person_identifiers_anywhere_in_aggregates() -> None:
    s1, s3 = MemoryState(), MemoryState()
    people = [
        card("CARD-AAAA", "CUST-AAAA", "HH-AAAA"),
        card("CARD-BBBB", "CUST-BBBB", "HH-BBBB", "MEMBER"),
    ]
    for c in people:
        run(card_join, s1, "customer.cards", c["card_number"], c, T0 - DAY_MS)
    run(card_join, s1, "customer.cards", "CARD-BBBB", None, T0 - HOUR_MS)  # closed
    receipts = [
        receipt("R-A1", card_number="CARD-AAAA"),
        receipt("R-B1", card_number="CARD-BBBB"),
        receipt("R-C1", card_number="CARD-CCCC"),  # unknown: parked, then its card arrives
        receipt("R-N1", card_number=None, lines=[line(1, GTIN_MILK, 189)]),
        receipt(
            "R-H1", card_number="CARD-AAAA", chain="HOTEL", total_cents=5000, bonus_eligible_cents=0
        ),
    ]
    contributions = []
    for i, r in enumerate(receipts):
        result = run(card_join, s1, "pos.receipts", r["card_number"], r, T0 + i)
        contributions += [e for e in result.emits if e.topic == "aggregates.contributions"]
    c3 = card("CARD-CCCC", "CUST-CCCC", "HH-CCCC")
    result = run(card_join, s1, "customer.cards", "CARD-CCCC", c3, T0 + HOUR_MS)
    contributions += [e for e in result.emits if e.topic == "aggregates.contributions"]
    assert sorted(e.value["receipt_id"] for e in contributions) == [
        "R-A1",
        "R-B1",
        "R-C1",
        "R-H1",
        "R-N1",
    ]
    outputs = []
    for i, e in enumerate(contributions):
        assert e.key == "STORE-01"
        outputs += feed(s3, e.value, T0 + 2 * HOUR_MS + i).emits
    text = (
        json.dumps([e.value for e in contributions])
        + json.dumps([(e.key, e.value) for e in outputs])
        + json.dumps(s3.data)
    )
    for ident in ("CARD-", "CUST-", "HH-"):
        assert ident not in text
    final = s3.get("agg|STORE-01|2024-03-05")
    assert final["receipt_count"] == 5
    assert final["total_cents"] == 833 * 3 + 189 + 5000


def test_exactly_once_after_a_crash_at_every_changelog_write() -> None:
    """A crash keeps any prefix of the changelog (idempotent producer); a restore from it,
    then the redelivery of every uncommitted record, counts each receipt exactly once.
    (The old order -- aggregate, then mark -- counted the last receipt twice when the
    crash fell between the two writes.)"""
    receipts = [contrib(f"R-{i}", store=f"STORE-0{i % 2}", total=100 + i) for i in range(4)]
    full = ChangelogState()
    for i, r in enumerate(receipts):
        feed(full, r, T0 + i)
    for cut in range(len(full.log) + 1):
        restored = cut_and_restore(full, cut)
        # Nothing was committed: every record is delivered again, in order.
        for i, r in enumerate(receipts):
            feed(restored, r, T0 + 10 + i)
        for store in ("STORE-00", "STORE-01"):
            mine = [r for r in receipts if r["store_id"] == store]
            agg = restored.get(group_aggregates.agg_key(store, "2024-03-05"))
            assert (agg["receipt_count"], agg["total_cents"]) == (
                len(mine),
                sum(r["total_cents"] for r in mine),
            ), f"crash after changelog write {cut}"


def test_last_receipt_id_is_not_in_the_emitted_aggregate() -> None:
    state = MemoryState()
    result = feed(state, contrib("R-1"), T0)
    assert "last" not in result.emits[0].value
    assert state.get(group_aggregates.agg_key("STORE-01", "2024-03-05"))["last"] == "R-1"
