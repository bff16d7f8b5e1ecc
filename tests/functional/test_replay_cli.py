"""``purchase-stream replay`` and ``extract`` as a user runs them: files in, JSON out."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from stream.simulator.config import SimConfig, SimStats
from stream.simulator.generator import generate

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_793_599_200_000  # 2026-11-02 08:00 Helsinki


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args], capture_output=True, text=True, timeout=300
    )


def write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def card(n: str, cid: str, hh: str = "H1") -> dict[str, Any]:
    return {
        "topic": "customer.cards",
        "key": n,
        "timestamp": T0,
        "value": {"card_number": n, "customer_id": cid, "household_id": hh, "role": "MAIN_MEMBER"},
    }


def consent(cid: str, version: int, at: int, on: bool) -> dict[str, Any]:
    flags = dict.fromkeys(
        (
            "product_level_services",
            "marketing_targeting",
            "external_audiences",
            "direct_marketing",
            "e_receipts",
        ),
        on,
    )
    return {
        "topic": "customer.consents",
        "key": cid,
        "timestamp": at,
        "value": {
            "customer_id": cid,
            "version": version,
            "effective_at": at,
            "source": "APP",
            **flags,
        },
    }


def receipt(rid: str, card_no: str | None, at: int, ts: int | None = None) -> dict[str, Any]:
    lines = [
        {
            "line_no": 1,
            "gtin": "6400000000017",
            "unit": "PCS",
            "quantity_milli": 2000,
            "amount_cents": 398,
            "bonus_eligible": True,
        }
    ]
    return {
        "topic": "pos.receipts",
        "key": card_no or "STORE-1",
        "timestamp": ts if ts is not None else at + 500,
        "value": {
            "receipt_id": rid,
            "store_id": "STORE-1",
            "chain": "S_MARKET",
            "card_number": card_no,
            "purchased_at": at,
            "total_cents": 398,
            "bonus_eligible_cents": 398,
            "payment_method": "CASH",
            "original_receipt_id": None,
            "lines": lines,
        },
    }


PRODUCT = {
    "gtin": "6400000000017",
    "name": "Oat drink 1 l",
    "product_group": "BEVERAGES",
    "food": True,
    "vegetable": False,
    "origin": "FINNISH_MADE",
    "net_weight_grams": 1030,
    "co2e_kg_per_kg": 0.4,
}


def test_replay_extract_and_clock(tmp_path: Path) -> None:
    events = [
        {"topic": "product.catalog", "key": PRODUCT["gtin"], "timestamp": T0, "value": PRODUCT},
        card("CARD-1", "CUST-1"),
        consent("CUST-1", 1, T0, True),
        receipt("R-1", "CARD-1", T0 + HOUR),
        receipt("R-1", "CARD-1", T0 + HOUR, ts=T0 + 2 * HOUR),  # redelivery
        receipt("R-2", "CARD-UNKNOWN", T0 + HOUR),  # parked, card never comes
        receipt("R-3", None, T0 + HOUR),  # anonymous
        {
            "topic": "pos.receipts",
            "key": "X",
            "timestamp": T0 + HOUR,
            "value_b64": base64.b64encode(b"garbage").decode(),
        },
    ]
    src = write(tmp_path / "events.jsonl", events)
    (tmp_path / "events.jsonl").open("ab").write(b"{not json\n")
    state = tmp_path / "state"
    out = tmp_path / "out.jsonl"

    res = cli("replay", str(src), "--state-dir", str(state), "--out", str(out))
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["bad_lines"] == 1
    assert "line 9: invalid_json" in res.stderr
    assert summary["dead_letters"] == {"invalid_json": 1, "undecodable": 1}
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    totals = [r for r in records if r["topic"] == "receipts.totals"]
    # R-1 once, plus the identical re-emit for its redelivery (downstream dedupes by id).
    assert [r["value"]["receipt_id"] for r in totals] == ["R-1", "R-1"]
    assert totals[0] == totals[1]
    counted = [r for r in records if r["topic"] == "smobiili.counters"]
    assert [(r["key"], r["value"]["month"], r["value"]["receipt_count"]) for r in counted] == [
        ("CUST-1", "2026-11", 1),
        ("CUST-1", "2026-11", 1),  # the redelivery re-sends the month, not counted again
    ]
    assert counted[0] == counted[1]

    extract = cli("extract", "--state-dir", str(state), "--customer", "CUST-1")
    assert extract.returncode == 0, extract.stderr
    data = json.loads(extract.stdout)
    assert data["customer_id"] == "CUST-1"
    assert data["consent"]["version"] == 1
    assert [c["card_number"] for c in data["cards"]] == ["CARD-1"]
    assert [r["receipt_id"] for r in data["receipt_totals"]] == ["R-1"]
    assert [
        (li["receipt_id"], li["line_no"], li["gtin"], li["amount_cents"])
        for li in data["line_items"]
    ] == [("R-1", 1, "6400000000017", 398)]
    assert [m["receipt_id"] for m in data["marketing_signals"]] == ["R-1"]
    assert [e["receipt_id"] for e in data["e_receipts"]] == ["R-1"]
    assert data["counters"] == {
        "2026-11": {
            "food_cents": 398,
            "finnish_raw_cents": 0,
            "finnish_made_cents": 398,
            "foreign_cents": 0,
            "unknown_origin_cents": 0,
            "food_grams": 2060,
            "vegetable_grams": 0,
            "co2e_grams": 824,
            "unknown_gtin_lines": 0,
            "line_count": 1,
            "receipt_count": 1,
            "domestic_share_pct": 100.0,
            "finnish_raw_share_pct": 0.0,
            "finnish_made_share_pct": 100.0,
            "foreign_share_pct": 0.0,
            "unknown_origin_share_pct": 0.0,
            "vegetable_share_pct": 0.0,
            "updated_at": T0 + HOUR + 500,
        }
    }

    # --now past the parking window: the parked receipt is dead-lettered with its bytes.
    empty = write(tmp_path / "empty.jsonl", [])
    res = cli(
        "replay",
        str(empty),
        "--state-dir",
        str(state),
        "--now",
        "2026-12-15T00:00:00Z",
        "--out",
        str(tmp_path / "out2.jsonl"),
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["dead_letters"] == {"card_unknown_timeout": 1}
    dl = [
        orjson.loads(x)
        for x in (tmp_path / "out2.jsonl").read_bytes().splitlines()
        if orjson.loads(x)["topic"] == "deadletters"
    ][0]["value"]
    assert dl["topic"] == "pos.receipts" and dl["key"] == base64.b64encode(b"CARD-UNKNOWN").decode()
    assert dl["value"] is not None


def test_extract_rejects_a_directory_that_is_not_state(tmp_path: Path) -> None:
    res = cli("extract", "--state-dir", str(tmp_path), "--customer", "CUST-1")
    assert res.returncode == 2
    assert "not a state directory" in res.stderr


def test_replay_of_a_simulated_month_counts_every_receipt_once(tmp_path: Path) -> None:
    stats = SimStats()
    events = list(generate(SimConfig(seed=3, households=200, receipts=3000), stats))
    src = write(tmp_path / "sim.jsonl", events)
    res = cli(
        "replay",
        str(src),
        "--state-dir",
        str(tmp_path / "st"),
        "--out",
        str(tmp_path / "out.jsonl"),
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["bad_lines"] == 0
    records = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    distinct_totals = {r["value"]["receipt_id"] for r in records if r["topic"] == "receipts.totals"}
    aggregated = {}
    for r in records:
        if r["topic"] == "aggregates.group":
            aggregated[r["key"]] = r["value"]["receipt_count"]
    receipts = [e for e in events if e["topic"] == "pos.receipts"]
    distinct_ids = {e["value"]["receipt_id"] for e in receipts}
    assert len(distinct_ids) == stats.receipts
    # Every distinct valid receipt whose card is known (or that is anonymous) is in the
    # anonymous aggregates exactly once; rule-breaking ones are dead letters; receipts of
    # never-registered cards are still parked (the run is shorter than the window).
    parked = set(stats.unknown_card_receipts)
    expected = distinct_ids - set(stats.bad) - parked
    assert sum(aggregated.values()) == len(expected)
    rule_codes = {k: v for k, v in summary["dead_letters"].items()}
    assert sum(rule_codes.values()) == len(stats.bad)
    # Receipt totals exist only for identified receipts, each once.
    assert distinct_totals <= expected
    assert summary["records_in"]["pos.receipts"] == len(receipts)
    _counters_match_the_personal_store(events, records)


def _counters_match_the_personal_store(
    events: list[dict[str, Any]], records: list[dict[str, Any]]
) -> None:
    """The last counters record of each person-month = the formulas over what the product-level
    store holds in the end (the simulator's catalogue comes first and never changes)."""
    from stream.settings import load_rules
    from topologies import counters

    rules = load_rules()
    catalog = {e["key"]: e["value"] for e in events if e["topic"] == "product.catalog"}
    personal: dict[str, Any] = {}
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        if r["topic"] == "personal.line_items":
            personal[r["key"]] = r["value"]
        elif r["topic"] == "smobiili.counters":
            assert r["key"] == r["value"]["customer_id"]
            last[(r["key"], r["value"]["month"])] = r["value"]
    want: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in personal.values():
        if rec is None:
            continue
        month = rules.local_month(rec["purchased_at"])
        c = want.setdefault((rec["customer_id"], month), counters.empty())
        products = [catalog.get(x["gtin"]) for x in rec["lines"]]
        counters.add(c, counters.receipt_contribution(products, rec["lines"]))
    got = {k: v for k, v in last.items() if not v["removed"]}
    assert got.keys() == want.keys()
    for k, c in want.items():
        assert {n: got[k][n] for n in counters.view(c)} == counters.view(c), k
    removed = {k for k, v in last.items() if v["removed"]}
    assert removed, "the simulated month has revocations and erasures"
    assert sum(v["unknown_gtin_lines"] for v in got.values()) > 0
    # Returned lines reached the store too (and so subtracted).
    assert any(x["amount_cents"] < 0 for rec in personal.values() if rec for x in rec["lines"])
