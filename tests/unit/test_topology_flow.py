"""The whole topology in-process: ``pipeline.STAGES`` driven by a tiny FIFO driver.

Every emit whose topic is an input of a stage is fed to that stage (in emit order, after the
current record); the rest are outputs. A small day of several customers is checked against
docs/domain.md §3: final stores, compacted outputs and the totals for the Bonus ledger.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import pytest

from stream.settings import load_rules
from tests.unit.topo_helpers import (
    DAY_MS,
    DEFAULT_PRODUCTS,
    GTIN_APPLE,
    GTIN_BEER,
    GTIN_MILK,
    HOUR_MS,
    MINUTE_MS,
    T0,
    card,
    consent,
    line,
    receipt,
)
from topologies import catalog
from topologies.consent import FLAGS
from topologies.context import Context
from topologies.pipeline import STAGES, Stage
from topologies.records import Emit, Reject
from topologies.state import MemoryState

ALL_ON = {flag: True for flag in FLAGS}


@dataclass
class Flow:
    states: dict[str, MemoryState]
    outputs: list[Emit] = field(default_factory=list)  # every emit, in order
    rejects: list[tuple[str, Reject]] = field(default_factory=list)
    processed: list[tuple[str, str]] = field(default_factory=list)  # (stage, topic)

    def on(self, topic: str) -> list[Emit]:
        return [e for e in self.outputs if e.topic == topic]

    def compacted(self, topic: str) -> dict[Any, Any]:
        """The topic as a compacted log would keep it: last value per key, tombstones kept."""
        view: dict[Any, Any] = {}
        for e in self.on(topic):
            view[e.key] = e.value
        return view


def drive(records: list[tuple[str, str | None, dict | None, int]]) -> Flow:
    rules = load_rules()
    readers: dict[str, list[Stage]] = defaultdict(list)
    for stage in STAGES:
        for topic in stage.inputs:
            readers[topic].append(stage)
    flow = Flow(states={s.name: MemoryState() for s in STAGES})
    lookup = catalog.lookup_in(flow.states[catalog.STAGE])
    for offset, (topic, key, value, now) in enumerate(records):
        queue = deque([(topic, key, value)])
        while queue:
            t, k, v = queue.popleft()
            for stage in readers[t]:
                ctx = Context(now_ms=now, rules=rules, catalog=lookup, topic=t, offset=offset)
                result = stage.step(ctx, flow.states[stage.name], t, k, v)
                flow.processed.append((stage.name, t))
                flow.rejects += [(stage.name, r) for r in result.rejects]
                for e in result.emits:
                    flow.outputs.append(e)
                    if e.topic in readers:
                        queue.append((e.topic, e.key, e.value))
    return flow


ANNA = card("CARD-ANNA", "CUST-ANNA", "HH-KOIVU", "MAIN_MEMBER")
BERT = card("CARD-BERT", "CUST-BERT", "HH-KOIVU", "MEMBER")
CECI = card("CARD-CECI", "CUST-CECI", "HH-LAHTI", "MAIN_MEMBER")
DAN = card("CARD-DAN", "CUST-DAN", "HH-NIEMI", "MAIN_MEMBER")

R_ANNA_1 = receipt("R-ANNA-1", card_number="CARD-ANNA", store_id="STORE-P1", chain="PRISMA")
R_BERT_1 = receipt(
    "R-BERT-1",
    card_number="CARD-BERT",
    store_id="STORE-S1",
    purchased_at=T0 + MINUTE_MS,
    lines=[line(1, GTIN_MILK, 189), line(2, GTIN_MILK, 189)],
)
R_CECI_1 = receipt(
    "R-CECI-1",
    card_number="CARD-CECI",
    store_id="STORE-A1",
    chain="ALEPA",
    purchased_at=T0 + 2 * MINUTE_MS,
)
R_ANON_1 = receipt(
    "R-ANON-1",
    card_number=None,
    store_id="STORE-S1",
    purchased_at=T0 + 3 * MINUTE_MS,
    lines=[line(1, GTIN_APPLE, 300, unit="KG", quantity_milli=1200)],
)
R_ANNA_2 = receipt(
    "R-ANNA-2",
    card_number="CARD-ANNA",
    store_id="STORE-H1",
    chain="HOTEL",
    purchased_at=T0 + 4 * MINUTE_MS,
    total_cents=12_000,
    bonus_eligible_cents=12_000,
    payment_method="OTHER_CARD",
)  # stray lines from the till: must be dropped
R_DAN_1 = receipt(
    "R-DAN-1",
    card_number="CARD-DAN",
    store_id="STORE-P1",
    chain="PRISMA",
    purchased_at=T0 + 5 * MINUTE_MS,
    lines=[line(1, GTIN_BEER, 399, bonus_eligible=False)],
)
R_BERT_2 = receipt(
    "R-BERT-2",
    card_number="CARD-BERT",
    store_id="STORE-S1",
    purchased_at=T0 + 3 * HOUR_MS,
    lines=[line(1, GTIN_MILK, 189)],
)

SCENARIO: list[tuple[str, str | None, dict | None, int]] = [
    *[("product.catalog", g, p, T0 - 2 * DAY_MS) for g, p in DEFAULT_PRODUCTS.items()],
    *[("customer.cards", c["card_number"], c, T0 - 2 * DAY_MS) for c in (ANNA, BERT, CECI)],
    ("customer.consents", "CUST-ANNA", consent("CUST-ANNA", 1, T0 - DAY_MS, **ALL_ON), T0 - DAY_MS),
    (
        "customer.consents",
        "CUST-BERT",
        consent("CUST-BERT", 1, T0 - DAY_MS, product_level_services=True),
        T0 - DAY_MS,
    ),
    (
        "customer.consents",
        "CUST-DAN",
        consent("CUST-DAN", 1, T0 - DAY_MS, marketing_targeting=True),
        T0 - DAY_MS,
    ),
    # Cecilia has no consent record: fail closed.
    ("pos.receipts", "CARD-ANNA", R_ANNA_1, T0 + 10),
    ("pos.receipts", "CARD-BERT", R_BERT_1, T0 + MINUTE_MS + 10),
    ("pos.receipts", "CARD-CECI", R_CECI_1, T0 + 2 * MINUTE_MS + 10),
    ("pos.receipts", None, R_ANON_1, T0 + 3 * MINUTE_MS + 10),
    ("pos.receipts", "CARD-ANNA", R_ANNA_2, T0 + 4 * MINUTE_MS + 10),
    ("pos.receipts", "CARD-DAN", R_DAN_1, T0 + 5 * MINUTE_MS + 10),  # card not known yet
    ("pos.receipts", "CARD-ANNA", R_ANNA_1, T0 + 6 * MINUTE_MS),  # redelivery
    ("customer.cards", "CARD-DAN", DAN, T0 + HOUR_MS),  # releases R-DAN-1
    (
        "customer.consents",
        "CUST-BERT",
        consent("CUST-BERT", 2, T0 + 2 * HOUR_MS),
        T0 + 2 * HOUR_MS,
    ),  # Bert revokes everything
    ("pos.receipts", "CARD-BERT", R_BERT_2, T0 + 3 * HOUR_MS + 10),
]


@pytest.fixture(scope="module")
def flow() -> Flow:
    return drive(SCENARIO)


def test_no_dead_letters(flow: Flow) -> None:
    assert flow.rejects == []


def test_stage_2_stores(flow: Flow) -> None:
    d = "2024-03-05"
    assert sorted(flow.states["personal_routing"].data) == sorted(
        [
            "consent|CUST-ANNA",
            "consent|CUST-BERT",
            "consent|CUST-DAN",
            "cn|CUST-ANNA|2024-03",
            "er|CUST-ANNA|R-ANNA-1",
            "er|CUST-ANNA|R-ANNA-2",
            "ms|CUST-ANNA|R-ANNA-1",
            "ms|CUST-DAN|R-DAN-1",
            "pl|CUST-ANNA|R-ANNA-1",
            f"rc|{d}|CUST-ANNA|R-ANNA-1",
            f"rc|{d}|CUST-BERT|R-BERT-1",
            f"rc|{d}|CUST-BERT|R-BERT-2",
            f"rc|{d}|CUST-CECI|R-CECI-1",
            f"rc|{d}|CUST-DAN|R-DAN-1",
            "rt|CUST-ANNA|R-ANNA-1",
            "rt|CUST-ANNA|R-ANNA-2",
            "rt|CUST-BERT|R-BERT-1",
            "rt|CUST-BERT|R-BERT-2",
            "rt|CUST-CECI|R-CECI-1",
            "rt|CUST-DAN|R-DAN-1",
            # the retention index: one entry per receipt, by Helsinki purchase date
            f"exp|{d}|CUST-ANNA|R-ANNA-1",
            f"exp|{d}|CUST-ANNA|R-ANNA-2",
            f"exp|{d}|CUST-BERT|R-BERT-1",
            f"exp|{d}|CUST-BERT|R-BERT-2",
            f"exp|{d}|CUST-CECI|R-CECI-1",
            f"exp|{d}|CUST-DAN|R-DAN-1",
            "meta|expiry_low",
            # the card register's links of each person (from stage 1)
            "reg|CUST-ANNA|CARD-ANNA",
            "reg|CUST-BERT|CARD-BERT",
            "reg|CUST-CECI|CARD-CECI",
            "reg|CUST-DAN|CARD-DAN",
        ]
    )
    s2 = flow.states["personal_routing"]
    assert s2.get("er|CUST-ANNA|R-ANNA-2")["receipt"]["lines"] == []
    assert s2.get("er|CUST-ANNA|R-ANNA-2")["receipt"]["total_cents"] == 12_000
    assert s2.get(f"rc|{d}|CUST-DAN|R-DAN-1") == {
        "card_number": "CARD-DAN",
        "customer_id": "CUST-DAN",
        "receipt_id": "R-DAN-1",
        "purchased_at": R_DAN_1["purchased_at"],
        "gtins": [GTIN_BEER],
    }
    assert s2.get("ms|CUST-DAN|R-DAN-1")["groups"] == [
        {"product_group": "ALCOHOL", "amount_cents": 399, "quantity_milli": 1000, "line_count": 1}
    ]


def test_stage_1_keeps_cards_only(flow: Flow) -> None:
    s1 = flow.states["card_join"]
    assert sorted(k for k in s1.data if not k.startswith("meta|")) == [
        "card|CARD-ANNA",
        "card|CARD-BERT",
        "card|CARD-CECI",
        "card|CARD-DAN",
    ]


def test_identified_receipts_exclude_the_anonymous_one(flow: Flow) -> None:
    identified = [(e.key, e.value["receipt"]["receipt_id"]) for e in flow.on("receipts.identified")]
    assert identified == [
        ("CUST-ANNA", "R-ANNA-1"),
        ("CUST-BERT", "R-BERT-1"),
        ("CUST-CECI", "R-CECI-1"),
        ("CUST-ANNA", "R-ANNA-2"),
        ("CUST-ANNA", "R-ANNA-1"),  # the redelivery, dropped in stage 2
        ("CUST-DAN", "R-DAN-1"),
        ("CUST-BERT", "R-BERT-2"),
    ]
    hotel = [e for e in flow.on("receipts.identified") if e.value["receipt"]["chain"] == "HOTEL"]
    assert [e.value["receipt"]["lines"] for e in hotel] == [[]]


def test_compacted_personal_outputs(flow: Flow) -> None:
    personal = flow.compacted("personal.line_items")
    assert set(personal) == {"CUST-ANNA/R-ANNA-1", "CUST-BERT/R-BERT-1"}
    assert personal["CUST-BERT/R-BERT-1"] is None  # revoked: tombstone
    assert [x["product_group"] for x in personal["CUST-ANNA/R-ANNA-1"]["lines"]] == [
        "DAIRY",
        "FRUIT",
        "ALCOHOL",
    ]
    assert flow.compacted("marketing.signals").keys() == {"CUST-ANNA/R-ANNA-1", "CUST-DAN/R-DAN-1"}
    assert flow.compacted("ereceipts.archive").keys() == {
        "CUST-ANNA/R-ANNA-1",
        "CUST-ANNA/R-ANNA-2",
    }


def test_smobiili_counters_stream(flow: Flow) -> None:
    # Product-level lines with product_level_services only; the redelivery re-sends the same
    # figures (counted once); Bert's revocation removes his month; nothing after it.
    got = [
        (e.key, e.value["month"], e.value["removed"], e.value) for e in flow.on("smobiili.counters")
    ]
    assert [g[:3] for g in got] == [
        ("CUST-ANNA", "2024-03", False),
        ("CUST-BERT", "2024-03", False),
        ("CUST-ANNA", "2024-03", False),
        ("CUST-BERT", "2024-03", True),
    ]
    assert got[0][3] == got[2][3]
    anna = got[0][3]
    assert (anna["receipt_count"], anna["line_count"], anna["food_cents"]) == (1, 3, 434)
    assert anna["updated_at"] == T0 + 10
    bert = got[1][3]
    assert (bert["receipt_count"], bert["food_cents"], bert["food_grams"]) == (1, 378, 2060)
    assert bert["domestic_share_pct"] == 100.0
    removed = got[3][3]
    assert removed["updated_at"] == T0 + 2 * HOUR_MS
    assert removed["food_cents"] == removed["receipt_count"] == 0
    assert removed["domestic_share_pct"] is None
    assert "cn|CUST-BERT|2024-03" not in flow.states["personal_routing"].data


def test_audit_of_the_revocation(flow: Flow) -> None:
    audits = [e.value for e in flow.on("audit.log")]
    assert audits == [
        {
            "at": T0 + 2 * HOUR_MS,
            "actor": "purchase-stream",
            "action": "revocation_purge",
            "subject_customer_id": "CUST-BERT",
            "purpose": "product_level_services",
            "outcome": "ok",
            "detail": json.dumps(
                {"deleted": 1, "smobiili.counters": 1, "store": "personal.line_items"},
                sort_keys=True,
            ),
        }
    ]


def test_receipt_totals_for_every_known_card_once_per_receipt(flow: Flow) -> None:
    totals = flow.on("receipts.totals")
    by_receipt = {}
    for e in totals:
        # A redelivery re-sends the same record under the same key.
        if e.value["receipt_id"] in by_receipt:
            assert by_receipt[e.value["receipt_id"]] == (e.key, e.value)
        by_receipt[e.value["receipt_id"]] = (e.key, e.value)
    assert sorted(by_receipt) == [
        "R-ANNA-1",
        "R-ANNA-2",
        "R-BERT-1",
        "R-BERT-2",
        "R-CECI-1",
        "R-DAN-1",
    ]
    per_household: dict[str, int] = defaultdict(int)
    for key, value in by_receipt.values():
        assert key == value["household_id"]
        per_household[key] += value["bonus_eligible_cents"]
    assert dict(per_household) == {
        "HH-KOIVU": 434 + 12_000 + 378 + 189,
        "HH-LAHTI": 434,
        "HH-NIEMI": 0,
    }
    assert by_receipt["R-ANNA-2"][1]["payment_method"] == "OTHER_CARD"
    assert by_receipt["R-BERT-2"][1]["role"] == "MEMBER"


def test_group_aggregates_count_every_receipt_once(flow: Flow) -> None:
    final = flow.compacted("aggregates.group")
    d = "2024-03-05"
    assert sorted(final) == [f"STORE-A1|{d}", f"STORE-H1|{d}", f"STORE-P1|{d}", f"STORE-S1|{d}"]
    assert {k: (v["receipt_count"], v["total_cents"]) for k, v in final.items()} == {
        f"STORE-A1|{d}": (1, 833),
        f"STORE-H1|{d}": (1, 12_000),
        f"STORE-P1|{d}": (2, 833 + 399),
        f"STORE-S1|{d}": (3, 378 + 300 + 189),
    }
    assert final[f"STORE-S1|{d}"]["groups"] == [
        {"product_group": "DAIRY", "amount_cents": 567, "quantity_milli": 3000, "line_count": 3},
        {"product_group": "FRUIT", "amount_cents": 300, "quantity_milli": 1200, "line_count": 1},
    ]
    assert final[f"STORE-H1|{d}"]["groups"] == []
    text = json.dumps(final) + json.dumps(flow.states["group_aggregates"].data)
    text += json.dumps([e.value for e in flow.on("aggregates.contributions")])
    for ident in ("CARD-", "CUST-", "HH-"):
        assert ident not in text


def test_every_stage_saw_its_records(flow: Flow) -> None:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for key in flow.processed:
        counts[key] += 1
    assert dict(counts) == {
        ("catalog", "product.catalog"): 3,
        ("card_join", "customer.cards"): 4,
        ("card_join", "pos.receipts"): 8,
        ("personal_routing", "customer.consents"): 4,
        ("personal_routing", "receipts.identified"): 7,
        ("group_aggregates", "aggregates.contributions"): 8,
        # Every identified receipt's total record (the redelivery re-emits its own) feeds
        # the household Bonus ledger.
        ("household_bonus", "receipts.totals"): 7,
        # Each card record's links, to the person's and the household's partitions.
        ("personal_routing", "register.people"): 4,
        ("household_bonus", "register.households"): 4,
    }
