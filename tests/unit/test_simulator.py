"""The POS simulator's stream is realistic, deterministic and holds every injected case; the
POS gateway producer sends it faithfully (keys, timestamps, tombstones, raw bad bytes, rate)."""

from __future__ import annotations

import base64
import hashlib
import os
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.simulator import pos
from stream.simulator.catalogue_data import PRODUCT_LEVEL_CHAINS, gtin_check_digit, is_valid_gtin
from stream.simulator.config import (
    BAD_KINDS,
    DEFAULT_BAD_KINDS,
    DEFAULT_START_MS,
    TOTAL_ONLY_CHAINS,
    SimConfig,
    SimStats,
)
from stream.simulator.generator import (
    bad_bytes_events,
    bad_bytes_replay_events,
    generate,
    read_jsonl,
    simulate,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parents[2]
CFG = SimConfig(seed=7, households=3_000, receipts=30_000, products=800, stores=300)


@pytest.fixture(scope="module")
def run() -> tuple[list[dict[str, Any]], SimStats]:
    return simulate(CFG)


@pytest.fixture(scope="module")
def events(run: tuple[list[dict[str, Any]], SimStats]) -> list[dict[str, Any]]:
    return run[0]


@pytest.fixture(scope="module")
def stats(run: tuple[list[dict[str, Any]], SimStats]) -> SimStats:
    return run[1]


@pytest.fixture(scope="module")
def receipts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """First delivery of every receipt (re-deliveries dropped)."""
    seen: set[str] = set()
    out = []
    for e in events:
        if e["topic"] == "pos.receipts" and e["value"]["receipt_id"] not in seen:
            seen.add(e["value"]["receipt_id"])
            out.append(e["value"])
    return out


def _topic(events: list[dict[str, Any]], topic: str) -> list[dict[str, Any]]:
    return [e for e in events if e["topic"] == topic]


def _first_receipt_index(events: list[dict[str, Any]]) -> int:
    return next(i for i, e in enumerate(events) if e["topic"] == "pos.receipts")


# -- determinism ---------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_stream() -> None:
    cfg = SimConfig(seed=3, households=300, receipts=2_000, products=200)
    first = [orjson.dumps(e) for e in generate(cfg)]
    again = [orjson.dumps(e) for e in generate(SimConfig(**vars(cfg)))]
    other = [orjson.dumps(e) for e in generate(SimConfig(**{**vars(cfg), "seed": 4}))]
    assert first == again
    assert first != other
    assert len(first) > 2_000


def test_consumers_may_modify_the_events_they_get() -> None:
    # A topology may enrich or pop fields of the dicts it is given; later events (returns,
    # re-deliveries, consent versions) must not change because of that.
    cfg = SimConfig(
        seed=8,
        households=300,
        receipts=3_000,
        products=200,
        returns=0.05,
        consent_changes=0.05,
        stale_consents=0.3,
    )
    clean = [orjson.dumps(e) for e in generate(cfg)]
    seen = []
    for e in generate(cfg):
        seen.append(orjson.dumps(e))
        if e["value"] is not None:
            for line in e["value"].get("lines", ()):
                line["amount_cents"] = 0
            e["value"].clear()
    assert seen == clean


def test_stream_does_not_depend_on_hash_randomisation(tmp_path: Path) -> None:
    code = (
        "import hashlib, orjson; from stream.simulator.config import SimConfig; "
        "from stream.simulator.generator import generate; "
        "h = hashlib.sha256(); "
        "[h.update(orjson.dumps(e)) for e in generate("
        "SimConfig(seed=5, households=200, receipts=1500, products=150))]; print(h.hexdigest())"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_default_start_is_monday_morning_in_helsinki() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    start = datetime.fromtimestamp(DEFAULT_START_MS / 1000, ZoneInfo("Europe/Helsinki"))
    assert (start.year, start.month, start.day, start.hour, start.minute) == (2026, 11, 2, 8, 0)
    assert SimConfig().start_ms == DEFAULT_START_MS


# -- stream order and time -----------------------------------------------------------------


def test_order_catalogue_then_population_then_receipts(events: list[dict[str, Any]]) -> None:
    topics = [e["topic"] for e in events]
    n_catalog = topics.count("product.catalog")
    assert set(topics[:n_catalog]) == {"product.catalog"}
    first = _first_receipt_index(events)
    assert set(topics[n_catalog:first]) == {"customer.cards", "customer.consents"}
    assert "product.catalog" not in topics[first:]


def test_broker_timestamps_non_decreasing(events: list[dict[str, Any]]) -> None:
    stamps = [e["timestamp"] for e in events]
    assert all(a <= b for a, b in zip(stamps, stamps[1:], strict=False))
    receipts = _topic(events, "pos.receipts")
    assert receipts[0]["timestamp"] >= CFG.start_ms
    # mean event-time rate is the configured one (exponential gaps)
    span_s = (receipts[-1]["timestamp"] - receipts[0]["timestamp"]) / 1000
    assert CFG.receipts / span_s == pytest.approx(CFG.receipts_per_second, rel=0.05)


def test_event_time_close_to_broker_time_except_late(
    events: list[dict[str, Any]], stats: SimStats
) -> None:
    late = set(stats.late)
    first_delivery: set[str] = set()
    lags_late = []
    for e in _topic(events, "pos.receipts"):
        r = e["value"]
        if r["receipt_id"] in first_delivery:
            continue  # a re-delivery keeps its original purchased_at
        first_delivery.add(r["receipt_id"])
        lag = e["timestamp"] - r["purchased_at"]
        if r["receipt_id"] in late:
            lags_late.append(lag)
        else:
            assert 0 < lag < 1_000
    assert len(lags_late) == len(late)
    assert min(lags_late) >= 3_600_000
    assert max(lags_late) > 24 * 3_600_000  # some are days late
    assert max(lags_late) <= 4 * 24 * 3_600_000


# -- catalogue -----------------------------------------------------------------------------


def test_gtin_check_digit_known_value() -> None:
    assert gtin_check_digit("400638133393") == 1  # GS1's worked example
    assert is_valid_gtin("4006381333931")
    assert is_valid_gtin("5901234123457")
    assert not is_valid_gtin("4006381333932")
    assert not is_valid_gtin("400638133393")


PRODUCT_FIELDS = {
    "gtin", "name", "product_group", "food", "vegetable", "origin", "net_weight_grams",
    "co2e_kg_per_kg",
}  # fmt: skip


def test_catalogue_is_realistic(events: list[dict[str, Any]], stats: SimStats) -> None:
    products = [e["value"] for e in _topic(events, "product.catalog")]
    assert len(products) == stats.products >= 700
    assert all(e["key"] == e["value"]["gtin"] for e in _topic(events, "product.catalog"))
    assert len({p["gtin"] for p in products}) == len(products)
    assert all(is_valid_gtin(p["gtin"]) for p in products)
    assert all(set(p) == PRODUCT_FIELDS for p in products)
    groups = Counter(p["product_group"] for p in products)
    assert len(groups) >= 15
    for g in ("VEGETABLES", "DAIRY", "MEAT", "ALCOHOL", "HARDWARE", "CLOTHING"):
        assert groups[g] > 0
    # origin is never derived from the prefix: both kinds of mismatch exist
    assert any(p["gtin"].startswith("64") and p["origin"] == "FOREIGN" for p in products)
    assert any(
        p["gtin"][:2] not in ("64", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29")
        and p["origin"] in ("FINNISH_MADE", "FINNISH_RAW")
        for p in products
    )
    veg = [p for p in products if p["vegetable"]]
    assert veg and all(p["food"] for p in veg)
    assert {p["product_group"] for p in veg} <= {"VEGETABLES", "FRUIT_BERRIES", "MUSHROOMS"}
    assert all(not p["food"] for p in products if p["product_group"] == "ALCOHOL")
    assert any(p["net_weight_grams"] is None for p in products if p["food"])
    assert all(
        p["co2e_kg_per_kg"] is None or p["co2e_kg_per_kg"] > 0 for p in products if p["food"]
    )
    gift_cards = [p for p in products if p["product_group"] == "GIFT_CARDS"]
    assert gift_cards and all(p["name"].startswith("Gift card") for p in gift_cards)


def test_uncatalogued_products_are_withheld(events: list[dict[str, Any]], stats: SimStats) -> None:
    catalogued = {e["key"] for e in _topic(events, "product.catalog")}
    assert stats.uncatalogued_gtins
    assert not catalogued & set(stats.uncatalogued_gtins)


# -- receipts ------------------------------------------------------------------------------


def test_receipt_shape_and_keys(events: list[dict[str, Any]]) -> None:
    fields = {
        "receipt_id",
        "store_id",
        "chain",
        "card_number",
        "purchased_at",
        "total_cents",
        "bonus_eligible_cents",
        "payment_method",
        "original_receipt_id",
        "lines",
    }
    line_fields = {"line_no", "gtin", "unit", "quantity_milli", "amount_cents", "bonus_eligible"}
    for e in _topic(events, "pos.receipts"):
        r = e["value"]
        assert set(r) == fields
        assert e["key"] == (r["card_number"] or r["store_id"])
        assert r["chain"] in PRODUCT_LEVEL_CHAINS + TOTAL_ONLY_CHAINS
        assert [line["line_no"] for line in r["lines"]] == list(range(1, len(r["lines"]) + 1))
        for line in r["lines"]:
            assert set(line) == line_fields
            assert line["unit"] in ("PCS", "KG")
            if line["unit"] == "PCS":
                assert line["quantity_milli"] % 1000 == 0


def test_product_level_receipts_add_up_except_the_bad_ones(
    receipts: list[dict[str, Any]], stats: SimStats
) -> None:
    checked = 0
    for r in receipts:
        if r["chain"] not in PRODUCT_LEVEL_CHAINS or r["receipt_id"] in stats.bad:
            continue
        assert r["lines"]
        assert r["total_cents"] == sum(line["amount_cents"] for line in r["lines"])
        assert r["bonus_eligible_cents"] == sum(
            line["amount_cents"] for line in r["lines"] if line["bonus_eligible"]
        )
        assert all(is_valid_gtin(line["gtin"]) for line in r["lines"])
        if r["original_receipt_id"] is None:
            assert r["total_cents"] > 0
            assert all(line["quantity_milli"] > 0 for line in r["lines"])
        checked += 1
    assert checked > 0.6 * len(receipts)


def test_bad_receipts_break_the_rule_they_are_listed_for(
    receipts: list[dict[str, Any]], stats: SimStats
) -> None:
    assert set(stats.bad.values()) == set(DEFAULT_BAD_KINDS)
    _check_bad(receipts, stats)


def test_bad_gtin_on_request() -> None:
    cfg = SimConfig(
        seed=4, households=200, receipts=3_000, products=200, bad=0.05, bad_kinds=BAD_KINDS
    )
    events, stats = simulate(cfg)
    receipts = {
        e["value"]["receipt_id"]: e["value"] for e in events if e["topic"] == "pos.receipts"
    }
    assert set(stats.bad.values()) == set(BAD_KINDS)
    _check_bad(list(receipts.values()), stats)
    assert "bad_gtin" not in DEFAULT_BAD_KINDS  # the validator does not check digits


def _check_bad(receipts: list[dict[str, Any]], stats: SimStats) -> None:
    by_id = {r["receipt_id"]: r for r in receipts}
    for rid, kind in stats.bad.items():
        r = by_id[rid]
        lines = r["lines"]
        line_sum = sum(line["amount_cents"] for line in lines)
        assert r["chain"] in PRODUCT_LEVEL_CHAINS
        assert r["original_receipt_id"] is None
        if kind == "total_mismatch":
            assert r["total_cents"] != line_sum
        elif kind == "eligible_mismatch":
            assert r["bonus_eligible_cents"] > r["total_cents"]
        elif kind == "negative_sale":
            assert r["total_cents"] < 0 and all(line["amount_cents"] < 0 for line in lines)
        else:
            assert not all(is_valid_gtin(line["gtin"]) for line in lines)
            assert r["total_cents"] == line_sum


def test_total_only_chains(receipts: list[dict[str, Any]], stats: SimStats) -> None:
    total_only = [r for r in receipts if r["chain"] in TOTAL_ONLY_CHAINS]
    assert len(total_only) == stats.total_only
    with_lines = [r for r in total_only if r["lines"]]
    assert len(with_lines) == stats.total_only_with_lines
    assert 0 < len(with_lines) < 0.15 * len(total_only)
    for r in total_only:
        assert 0 <= r["bonus_eligible_cents"] <= r["total_cents"]
    # the till computes the eligible part itself: not always the whole total
    assert any(0 < r["bonus_eligible_cents"] < r["total_cents"] for r in total_only)


def test_alcohol_and_gift_card_payments_not_bonus_eligible(
    events: list[dict[str, Any]], receipts: list[dict[str, Any]], stats: SimStats
) -> None:
    group = {e["key"]: e["value"]["product_group"] for e in _topic(events, "product.catalog")}
    seen_alcohol = seen_gift = 0
    for r in receipts:
        if r["receipt_id"] in stats.bad:
            continue
        if r["payment_method"] == "GIFT_CARD":
            seen_gift += 1
            assert r["bonus_eligible_cents"] == 0
            assert not any(line["bonus_eligible"] for line in r["lines"])
        for line in r["lines"]:
            if group.get(line["gtin"]) in ("ALCOHOL", "GIFT_CARDS"):
                seen_alcohol += 1
                assert not line["bonus_eligible"]
    assert seen_alcohol > 100 and seen_gift > 50


def test_weighed_lines_are_kilograms(events: list[dict[str, Any]], receipts: list[Any]) -> None:
    weighed = {
        e["key"]
        for e in _topic(events, "product.catalog")
        if e["value"]["net_weight_grams"] is None
    }
    kg_lines = [line for r in receipts for line in r["lines"] if line["unit"] == "KG"]
    assert len(kg_lines) > 1000
    assert any(line["quantity_milli"] % 1000 for line in kg_lines)  # e.g. 1.234 kg = 1234
    catalogued_kg = [line for line in kg_lines if line["gtin"] in weighed or line["gtin"][0] == "2"]
    assert len(catalogued_kg) == len(kg_lines)


def test_mix_is_as_configured(receipts: list[dict[str, Any]], stats: SimStats) -> None:
    n = len(receipts)
    assert n == stats.receipts == CFG.receipts
    anonymous = sum(r["card_number"] is None for r in receipts)
    assert anonymous == stats.anonymous
    assert anonymous / n == pytest.approx(CFG.anonymous, abs=0.02)
    assert len(stats.returns) / n == pytest.approx(CFG.returns, rel=0.2)
    assert len(stats.late) / n == pytest.approx(CFG.late, rel=0.25)
    assert len(stats.bad) / n == pytest.approx(CFG.bad, rel=0.5)
    assert len(stats.duplicates) / n == pytest.approx(CFG.duplicates, rel=0.25)
    assert len(stats.unknown_card_receipts) > 0
    chains = Counter(r["chain"] for r in receipts)
    big_four = sum(chains[c] for c in ("S_MARKET", "PRISMA", "ALEPA", "SALE"))
    assert 0.75 < big_four / n < 0.87
    assert chains.most_common(1)[0][0] == "S_MARKET"
    assert set(chains) == set(PRODUCT_LEVEL_CHAINS + TOTAL_ONLY_CHAINS)
    payments = Counter(r["payment_method"] for r in receipts)
    assert set(payments) == {"S_ETUKORTTI_PAYMENT", "OTHER_CARD", "CASH", "MOBILE", "GIFT_CARD"}
    assert all(
        r["card_number"] is not None
        for r in receipts
        if r["payment_method"] == "S_ETUKORTTI_PAYMENT"
    )


def test_line_counts_per_format(receipts: list[dict[str, Any]]) -> None:
    def lines_of(chains: tuple[str, ...]) -> list[int]:
        return [
            len(r["lines"])
            for r in receipts
            if r["chain"] in chains and r["original_receipt_id"] is None
        ]

    grocery = lines_of(("S_MARKET", "PRISMA", "ALEPA", "SALE", "FOOD_MARKET_HERKKU"))
    assert 10 <= statistics.mean(grocery) <= 14
    assert min(grocery) == 1 and max(grocery) == 40
    hardware = lines_of(("S_RAUTA", "PRISMA_RAUTA", "KODIN_TERRA"))
    assert statistics.mean(hardware) < 5
    assert statistics.mean(lines_of(("PRISMA",))) > statistics.mean(lines_of(("ALEPA",)))


def test_returns_name_an_earlier_receipt_and_are_negative(
    receipts: list[dict[str, Any]], stats: SimStats
) -> None:
    position = {r["receipt_id"]: i for i, r in enumerate(receipts)}
    assert len(stats.returns) > 300
    returned: set[str] = set()
    for rid in stats.returns:
        r = receipts[position[rid]]
        original_id = r["original_receipt_id"]
        assert original_id is not None and original_id not in returned
        returned.add(original_id)
        assert position[original_id] < position[rid]
        original = receipts[position[original_id]]
        assert original_id not in stats.bad and original["original_receipt_id"] is None
        assert (r["store_id"], r["card_number"], r["payment_method"]) == (
            original["store_id"],
            original["card_number"],
            original["payment_method"],
        )
        assert r["total_cents"] < 0 and r["bonus_eligible_cents"] <= 0
        assert r["total_cents"] == sum(line["amount_cents"] for line in r["lines"])
        assert 1 <= len(r["lines"]) <= len(original["lines"])
        originals = Counter(
            (li["gtin"], li["unit"], li["quantity_milli"], li["amount_cents"], li["bonus_eligible"])
            for li in original["lines"]
        )
        back = Counter(
            (
                li["gtin"],
                li["unit"],
                -li["quantity_milli"],
                -li["amount_cents"],
                li["bonus_eligible"],
            )
            for li in r["lines"]
        )
        assert not back - originals  # a subset of the original's lines, negated
    # every receipt that is not a return has no original
    assert sum(r["original_receipt_id"] is not None for r in receipts) == len(stats.returns)


def test_duplicates_are_byte_identical_redeliveries(
    events: list[dict[str, Any]], stats: SimStats
) -> None:
    first: dict[str, tuple[int, bytes, str | None, int]] = {}
    redelivered = []
    for i, e in enumerate(_topic(events, "pos.receipts")):
        body = orjson.dumps(e["value"])
        rid = e["value"]["receipt_id"]
        if rid in first:
            j, first_body, first_key, first_ts = first[rid]
            assert body == first_body and e["key"] == first_key and e["timestamp"] >= first_ts
            assert i > j
            redelivered.append(rid)
        else:
            first[rid] = (i, body, e["key"], e["timestamp"])
    assert sorted(redelivered) == sorted(stats.duplicates)
    assert len(redelivered) > 100
    # some come back much later (a gateway re-sending a batch), most within seconds
    assert len(set(redelivered)) == len(redelivered)


# -- population ----------------------------------------------------------------------------


def _card_states(card_events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    state: dict[str, dict[str, Any]] = {}
    for e in card_events:
        if e["value"] is None:
            state.pop(e["key"], None)
        else:
            state[e["key"]] = e["value"]
    return state


def _households(cards: dict[str, dict[str, Any]]) -> dict[str, dict[str, set[str]]]:
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for c in cards.values():
        out[c["household_id"]][c["role"]].add(c["customer_id"])
    return out


def test_households_have_one_main_member(events: list[dict[str, Any]], stats: SimStats) -> None:
    first = _first_receipt_index(events)
    late_cards = set(stats.late_cards)
    initial_events = [e for e in events[:first] if e["topic"] == "customer.cards"]
    initial_events += [
        e for e in events[first:] if e["topic"] == "customer.cards" and e["key"] in late_cards
    ]
    initial = _card_states(initial_events)
    assert len(initial) == stats.cards
    households = _households(initial)
    assert len(households) == CFG.households
    sizes: Counter[int] = Counter()
    for roles in households.values():
        assert len(roles["MAIN_MEMBER"]) == 1
        members = roles["MAIN_MEMBER"] | roles["MEMBER"]
        assert not roles["MAIN_MEMBER"] & roles["MEMBER"]
        assert 1 <= len(members) <= 4
        sizes[len(members)] += 1
    assert set(sizes) == {1, 2, 3, 4}
    cards_per_person = Counter(c["customer_id"] for c in initial.values())
    assert set(cards_per_person.values()) == {1, 2}
    # after moves, closures and erasures every household still has exactly one main member
    final = _households(_card_states(_topic(events, "customer.cards")))
    assert all(len(roles["MAIN_MEMBER"]) == 1 for roles in final.values())


def test_rare_population_changes(events: list[dict[str, Any]], stats: SimStats) -> None:
    assert stats.household_moves and stats.closed_cards and stats.erased_customers
    first = _first_receipt_index(events)
    later = events[first:]
    moved = {cid: new for cid, _, new in stats.household_moves}
    for e in later:
        if e["topic"] == "customer.cards" and e["value"] and e["value"]["customer_id"] in moved:
            assert e["value"]["household_id"] == moved[e["value"]["customer_id"]]
    tombstoned = {e["key"] for e in later if e["topic"] == "customer.cards" and e["value"] is None}
    assert set(stats.closed_cards) <= tombstoned
    erased = set(stats.erased_customers)
    erasure_at: dict[str, int] = {}
    for i, e in enumerate(later):
        if e["topic"] == "customer.consents" and e["value"] is None:
            erasure_at[e["key"]] = i
    assert set(erasure_at) == erased
    for i, e in enumerate(later):
        if e["topic"] == "customer.consents" and e["key"] in erasure_at:
            assert i <= erasure_at[e["key"]]  # nothing about an erased customer afterwards
    # a closed card is not shown at a till again (only earlier receipts may come back)
    closed_at = {
        e["key"]: i
        for i, e in enumerate(later)
        if e["topic"] == "customer.cards" and e["value"] is None
    }
    returns, dups = set(stats.returns), set(stats.duplicates)
    for i, e in enumerate(later):
        r = e["value"]
        card = r["card_number"] if e["topic"] == "pos.receipts" else None
        if card in closed_at and i > closed_at[card]:
            assert r["receipt_id"] in returns or r["receipt_id"] in dups


def test_late_cards_arrive_after_their_first_receipt(
    events: list[dict[str, Any]], stats: SimStats
) -> None:
    first = _first_receipt_index(events)
    assert stats.late_cards
    assert set(stats.late_card_first_receipt) == set(stats.late_cards)
    registered_at: dict[str, int] = {}
    first_use: dict[str, tuple[int, str]] = {}
    for i, e in enumerate(events):
        if e["topic"] == "customer.cards" and e["key"] in stats.late_card_first_receipt:
            registered_at.setdefault(e["key"], i)
        if (
            e["topic"] == "pos.receipts"
            and e["value"]["card_number"] in stats.late_card_first_receipt
        ):
            first_use.setdefault(e["value"]["card_number"], (i, e["value"]["receipt_id"]))
    for card in stats.late_cards:
        i, rid = first_use[card]
        assert registered_at[card] > i > first
        assert rid == stats.late_card_first_receipt[card]


def test_unknown_cards_are_never_registered(events: list[dict[str, Any]], stats: SimStats) -> None:
    registered = {e["key"] for e in _topic(events, "customer.cards")}
    unknown = {
        e["value"]["card_number"]
        for e in _topic(events, "pos.receipts")
        if e["value"]["receipt_id"] in set(stats.unknown_card_receipts)
    }
    assert unknown and not unknown & registered


def test_consent_mix(events: list[dict[str, Any]], stats: SimStats) -> None:
    first = _first_receipt_index(events)
    records = [e["value"] for e in events[:first] if e["topic"] == "customer.consents"]
    customers = {
        e["value"]["customer_id"] for e in events[:first] if e["topic"] == "customer.cards"
    }
    customers |= {
        e["value"]["customer_id"] for e in events if e["topic"] == "customer.cards" and e["value"]
    }
    assert len(customers) == stats.customers
    without = stats.customers_without_consent
    assert without == len(customers) - len(records)
    assert without / len(customers) == pytest.approx(CFG.no_consent, abs=0.01)
    for flag in ("product_level_services", "marketing_targeting", "e_receipts"):
        share = sum(r[flag] for r in records) / len(records)
        assert share == pytest.approx(getattr(CFG, flag), abs=0.02), flag
    assert {r["source"] for r in records} == {"migration", "S-mobiili", "customer-service"}
    assert all(r["effective_at"] < CFG.start_ms for r in records)


def test_consent_versions_increase_except_the_stale_resends(
    events: list[dict[str, Any]], stats: SimStats
) -> None:
    latest: dict[str, dict[str, Any]] = {}
    seen: dict[str, set[bytes]] = defaultdict(set)
    stale = []
    changes = 0
    first = _first_receipt_index(events)
    for i, e in enumerate(events):
        if e["topic"] != "customer.consents" or e["value"] is None:
            continue
        cid, record = e["key"], e["value"]
        assert record["customer_id"] == cid
        body = orjson.dumps(record)
        held = latest.get(cid)
        if held is not None and record["version"] <= held["version"]:
            assert body in seen[cid]  # an exact earlier version, re-sent
            stale.append((cid, record["version"]))
        else:
            if held is not None:
                assert record["version"] == held["version"] + 1
                assert record["effective_at"] > held["effective_at"]
                assert record["effective_at"] <= e["timestamp"] + 1
            if i > first:
                changes += 1
            latest[cid] = record
        seen[cid].add(body)
    assert stale == stats.stale_consents and stale
    assert changes == stats.consent_changes
    assert stats.consent_changes == round(CFG.receipts * CFG.consent_changes)
    assert stats.product_level_revocations and stats.consent_opt_ins


# -- files and raw payloads ----------------------------------------------------------------


def test_write_and_read_jsonl(tmp_path: Path) -> None:
    cfg = SimConfig(seed=2, households=100, receipts=500, products=100)
    seen: list[int] = []
    path = tmp_path / "sub" / "events.jsonl"
    n = write_jsonl(generate(cfg), path, progress=seen.append)
    lines = path.read_bytes().splitlines()
    assert n == len(lines) == seen[-1]
    assert lines == [orjson.dumps(e) for e in generate(cfg)]
    assert list(read_jsonl(path)) == list(generate(cfg))


def test_bad_bytes_cover_undecodable_cases() -> None:
    payloads = bad_bytes_events()
    values = [v for _, _, v in payloads]
    assert {t for t, _, _ in payloads} == {"pos.receipts", "customer.cards", "customer.consents"}
    assert any(v[:1] not in (b"\x00", b"{") for v in values)  # garbage
    assert any(v[:1] == b"\x01" for v in values)  # wrong magic byte
    assert any(v[:1] == b"\x00" and int.from_bytes(v[1:5], "big") == 9999 for v in values)
    assert any(len(v) < 5 for v in values)  # shorter than the Confluent header
    assert all(isinstance(v, bytes) for v in values)


def test_bad_bytes_as_replay_lines() -> None:
    events = bad_bytes_replay_events(123)
    raw = bad_bytes_events()
    assert len(events) == len(raw)
    for e, (topic, key, value) in zip(events, raw, strict=True):
        assert e["topic"] == topic and e["timestamp"] == 123
        assert e["key"] == (None if key is None else key.decode())
        assert base64.b64decode(e["value_b64"]) == value
        assert "value" not in e


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        SimConfig(anonymous=1.5)
    with pytest.raises(ValueError):
        SimConfig(bad_kinds=("nonsense",))
    with pytest.raises(ValueError):
        SimConfig(receipts_per_second=0)


def test_zero_rates_give_a_clean_stream() -> None:
    cfg = SimConfig(
        seed=9, households=200, receipts=3_000, products=150, returns=0, late=0, bad=0,
        duplicates=0, unknown_cards=0, late_cards=0, consent_changes=0, household_moves=0,
        card_closures=0, erasures=0, uncatalogued_products=0,
    )  # fmt: skip
    stats = SimStats()
    evs = list(generate(cfg, stats))
    assert not (stats.returns or stats.late or stats.bad or stats.duplicates or stats.late_cards)
    ids = [e["value"]["receipt_id"] for e in evs if e["topic"] == "pos.receipts"]
    assert len(ids) == len(set(ids)) == 3_000
    assert not any(e["value"] is None for e in evs)


def test_generation_is_fast() -> None:
    started = time.perf_counter()
    stats = SimStats()
    for _ in generate(SimConfig(seed=1, households=2_000, receipts=20_000), stats):
        pass
    # ~0.8 s on the reference 2-core machine; generous for loaded CI runners
    assert time.perf_counter() - started < 10
    assert stats.receipts == 20_000


# -- the POS gateway producer (fake librdkafka producer; tests/integration uses a broker) ----


class _Meta:
    def __init__(self, topics: set[str]) -> None:
        self.topics = {t: _TopicMeta() for t in topics}


class _TopicMeta:
    error = None


class FakeProducer:
    def __init__(self, config: dict[str, Any], topics: set[str], full_every: int = 0) -> None:
        self.config = config
        self.topics = topics
        self.sent: list[tuple[str, bytes | None, bytes | None, int]] = []
        self.callbacks: list[Any] = []
        self.full_every = full_every
        self.buffer_errors = 0
        self.fail_topics: set[str] = set()

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> _Meta:
        return _Meta(self.topics)

    def produce(
        self, topic: str, value: Any = None, key: Any = None, timestamp: int = 0, on_delivery=None
    ) -> None:
        if self.full_every and len(self.sent) % self.full_every == 1 and self.callbacks:
            self.buffer_errors += 1
            self.poll(0)  # so that the retry succeeds
            raise BufferError("queue full")
        self.sent.append((topic, key, value, timestamp))
        self.callbacks.append((on_delivery, topic))

    def poll(self, timeout: float = 0) -> int:
        n = len(self.callbacks)
        for cb, topic in self.callbacks:
            err = "boom" if topic in self.fail_topics else None
            cb(_Err(err) if err else None, _Msg(topic))
        self.callbacks.clear()
        return n

    def flush(self, timeout: float = 0) -> int:
        self.poll(0)
        return 0


class _Err:
    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def fatal(self) -> bool:
        return False


class _Msg:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


class JsonCodec:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def encode(self, topic: str, value: dict[str, Any]) -> bytes | None:
        self.calls.append(topic)
        return orjson.dumps(value)


INPUTS = {"pos.receipts", "customer.cards", "customer.consents", "product.catalog"}


def _small_stream() -> list[dict[str, Any]]:
    return list(generate(SimConfig(seed=11, households=50, receipts=300, products=60)))


def test_producer_sends_keys_values_timestamps_and_tombstones() -> None:
    evs = _small_stream() + [
        {"topic": "customer.cards", "key": "7000", "value": None, "timestamp": 5}
    ]
    fakes: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        fakes.append(FakeProducer(config, INPUTS, full_every=97))
        return fakes[-1]

    codec = JsonCodec()
    bad = bad_bytes_events()
    result = pos.produce(evs, bootstrap="x:1", codec=codec, bad_bytes=bad, producer_factory=factory)
    fake = fakes[0]
    assert fake.config["enable.idempotence"] is True and fake.config["acks"] == "all"
    assert fake.config["partitioner"] == "murmur2_random"
    assert fake.config["compression.type"] == "none"
    assert fake.buffer_errors > 0  # BufferError was retried, nothing lost
    raw = [s for s in fake.sent if (s[0], s[1], s[2]) in {(t, k, v) for t, k, v in bad}]
    assert len(raw) == len(bad)
    first_receipt = next(i for i, s in enumerate(fake.sent) if s[0] == "pos.receipts")
    assert fake.sent.index(raw[0]) == first_receipt + 1  # mid-stream, after the register
    normal = [s for s in fake.sent if s not in raw]
    assert len(normal) == len(evs)
    for (topic, key, value, ts), e in zip(normal, evs, strict=True):
        assert topic == e["topic"] and ts == e["timestamp"]
        assert key == (None if e["key"] is None else e["key"].encode())
        assert value == (None if e["value"] is None else orjson.dumps(e["value"]))
    # tombstones (closed card, erasure, the one added above) are not encoded
    assert len(codec.calls) == sum(e["value"] is not None for e in evs) < len(evs)
    assert result["events"] == len(evs) and result["bad_bytes"] == len(bad)
    assert result["delivered"] == len(evs) + len(bad) and result["delivery_errors"] == 0
    assert result["receipts"] == sum(e["topic"] == "pos.receipts" for e in evs)


def test_producer_counts_delivery_errors() -> None:
    fake = FakeProducer({}, INPUTS)
    fake.fail_topics = {"customer.consents"}
    evs = _small_stream()
    result = pos.produce(evs, bootstrap="x:1", codec=JsonCodec(), producer_factory=lambda c: fake)
    n_consents = sum(e["topic"] == "customer.consents" for e in evs)
    assert result["delivery_errors"] == n_consents > 0
    assert result["error_samples"][0].startswith("customer.consents")


def test_producer_rate_limits_receipts_only(capsys: pytest.CaptureFixture[str]) -> None:
    evs = [
        {"topic": "customer.cards", "key": str(i), "value": {}, "timestamp": 1} for i in range(500)
    ]
    evs += [{"topic": "pos.receipts", "key": "k", "value": {}, "timestamp": 2} for _ in range(40)]
    fake = FakeProducer({}, INPUTS)
    started = time.monotonic()
    result = pos.produce(
        evs[:500], bootstrap="x:1", codec=JsonCodec(), rate=20, producer_factory=lambda c: fake
    )
    assert time.monotonic() - started < 0.5  # other topics are not throttled
    started = time.monotonic()
    result = pos.produce(
        evs[500:], bootstrap="x:1", codec=JsonCodec(), rate=100, progress=True,
        producer_factory=lambda c: FakeProducer({}, INPUTS),
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert 0.3 < elapsed < 2.0  # 40 receipts at 100/s, 10 of them as the initial burst
    assert result["receipts"] == 40
    assert "receipts/s" in capsys.readouterr().err


def test_producer_reports_missing_topic() -> None:
    fake = FakeProducer({}, {"pos.receipts"})
    with pytest.raises(pos.TopicMissingError, match="customer.cards"):
        pos.produce(
            [{"topic": "customer.cards", "key": "a", "value": {}, "timestamp": 1}],
            bootstrap="x:1",
            codec=JsonCodec(),
            producer_factory=lambda c: fake,
        )


def test_producer_reports_unreachable_broker() -> None:
    started = time.monotonic()
    with pytest.raises(pos.BrokerUnavailableError, match="127.0.0.1:1"):
        pos.produce([], bootstrap="127.0.0.1:1", codec=JsonCodec(), connect_timeout=1.0)
    assert time.monotonic() - started < 5


def test_token_bucket() -> None:
    now = [0.0]
    bucket = pos._TokenBucket(10.0, clock=lambda: now[0])
    assert bucket.take() == 0.0  # the burst of one token
    assert bucket.take() == pytest.approx(0.1)
    now[0] = 0.2
    assert bucket.take() == pytest.approx(0.0, abs=1e-9)


def test_golden_stream_digest() -> None:
    # Recorded replay files and benchmark baselines depend on the generator's exact output:
    # a change to it must be deliberate (then update this digest and say so).
    h = hashlib.sha256()
    for e in generate(SimConfig(households=50, receipts=200, products=50)):
        h.update(orjson.dumps(e))
    assert h.hexdigest() == "2268456492f39c74bedaf85483b470b0c68106f92587b0c39b8156d08f7468f7"


def test_card_records_carry_effective_time_and_version_and_some_do_not() -> None:
    cfg = SimConfig(seed=4, households=300, receipts=4_000, household_moves=0.002,
                    role_changes=0.002, card_closures=0.001)  # fmt: skip
    events, stats = simulate(cfg)
    cards = [e for e in events if e["topic"] == "customer.cards" and e["value"] is not None]
    versioned = [e for e in cards if "version" in e["value"]]
    assert 0.8 < len(versioned) / len(cards) < 0.97  # unversioned_cards = 0.1
    for e in versioned:
        assert e["value"]["effective_at"] in (e["timestamp"], None)
    last: dict[str, int] = {}
    for e in versioned:  # per card, versions increase in stream order
        assert e["value"]["version"] > last.get(e["key"], 0)
        last[e["key"]] = e["value"]["version"]
    assert stats.role_changes and stats.household_moves and stats.closed_cards
    # A role change: the old main member's cards say MEMBER, the new one's MAIN_MEMBER.
    hh, old, new = stats.role_changes[0]
    roles = {e["value"]["customer_id"]: e["value"]["role"] for e in cards
             if e["value"]["household_id"] == hh}  # fmt: skip
    assert roles[new] == "MAIN_MEMBER"
