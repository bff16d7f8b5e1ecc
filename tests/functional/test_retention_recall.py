"""Retention, erasure and product recalls on `replay` state, as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from tests.functional.test_replay_cli import card, cli, consent, receipt, write
from tests.unit.topo_helpers import utc_ms

GTIN = "6400000000017"  # the line every test receipt carries
OLD = utc_ms(2024, 10, 5, 10)  # > 2 years before NOW: every store purges it
MID = utc_ms(2025, 6, 10, 10)  # 1-2 years before NOW: only the recall index purges it
NEW = utc_ms(2026, 11, 2, 10)  # recent: everything kept
NOW = "2026-11-22T12:00:00Z"


def outputs(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def audit_lines(state: Path) -> list[dict[str, Any]]:
    return [r["value"] for r in outputs(state / "audit.log.jsonl")]


def build(tmp_path: Path) -> Path:
    t0 = OLD - 3_600_000
    events = [
        card("CARD-1", "CUST-1", hh="H1") | {"timestamp": t0},
        card("CARD-2", "CUST-2", hh="H2") | {"timestamp": t0},
        consent("CUST-1", 1, t0, True),
        consent("CUST-2", 1, t0, False),  # product level (and everything else) switched off
        receipt("R-OLD-1", "CARD-1", OLD),
        receipt("R-OLD-2", "CARD-2", OLD),
        receipt("R-MID-1", "CARD-1", MID),
        receipt("R-NEW-1", "CARD-1", NEW),
    ]
    state = tmp_path / "state"
    res = cli("replay", str(write(tmp_path / "e.jsonl", events)), "--state-dir", str(state))
    assert res.returncode == 0, res.stderr
    return state


def recall(state: Path, start: str, end: str) -> tuple[list[dict[str, Any]], str]:
    res = cli(
        "recall", "--gtin", GTIN, "--from", start, "--to", end, "--reason", "Listeria",
        "--state-dir", str(state), "--requested-by", "staff-7",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return [json.loads(x) for x in res.stdout.splitlines()], res.stderr


def test_a_recall_finds_opted_out_buyers_and_is_audited(tmp_path: Path) -> None:
    state = build(tmp_path)
    found, _ = recall(state, "2024-10-01", "2024-10-31")
    assert sorted(n["customer_id"] for n in found) == ["CUST-1", "CUST-2"]
    by_customer = {n["customer_id"]: n for n in found}
    assert by_customer["CUST-2"]["card_numbers"] == ["CARD-2"]
    assert [r["receipt_id"] for r in by_customer["CUST-2"]["receipts"]] == ["R-OLD-2"]
    assert {n["reason"] for n in found} == {"Listeria"}
    assert len({n["recall_id"] for n in found}) == 1
    # The opted-out buyer has no product-level data anywhere else: the recall index is the
    # only place that knows, and reading it left a trace.
    ex = json.loads(cli("extract", "--state-dir", str(state), "--customer", "CUST-2").stdout)
    assert ex["line_items"] == [] and ex["consent"] is not None
    audit = [a for a in audit_lines(state) if a["action"] == "recall"]
    assert sorted(a["subject_customer_id"] or "" for a in audit) == ["", "CUST-1", "CUST-2"]
    assert {a["actor"] for a in audit} == {"staff-7"}
    assert {a["purpose"] for a in audit} == {"product_recall"}
    summary = next(a for a in audit if a["subject_customer_id"] is None)
    assert json.loads(summary["detail"])["customers"] == 2
    # Outside the window, or another product: nobody.
    found, _ = recall(state, "2024-11-01", "2024-11-30")
    assert found == []


def test_recall_rejects_a_bad_window(tmp_path: Path) -> None:
    state = build(tmp_path)
    res = cli(
        "recall", "--gtin", GTIN, "--from", "2024-10-31", "--to", "2024-10-01",
        "--state-dir", str(state),
    )  # fmt: skip
    assert res.returncode == 2 and "ends before it starts" in res.stderr


def test_extract_and_bonus_reads_are_audited(tmp_path: Path) -> None:
    state = build(tmp_path)
    assert cli("extract", "--state-dir", str(state), "--customer", "CUST-1").returncode == 0
    res = cli(
        "bonus", "--state-dir", str(state), "--household", "H1", "--month", "2026-11",
        "--requested-by", "staff-9", "--purpose", "customer_request",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    audit = audit_lines(state)
    assert [(a["action"], a["subject_customer_id"]) for a in audit] == [
        ("read_extract", "CUST-1"),
        ("read_household_bonus", None),
    ]
    assert audit[0]["purpose"] == "register_extract_request"
    assert audit[1]["actor"] == "staff-9" and audit[1]["purpose"] == "customer_request"


def test_retention_purges_each_store_at_its_own_limit(tmp_path: Path) -> None:
    state = build(tmp_path)
    out = tmp_path / "purge.jsonl"
    empty = write(tmp_path / "empty.jsonl", [])
    res = cli("replay", str(empty), "--state-dir", str(state), "--now", NOW, "--out", str(out))
    assert res.returncode == 0, res.stderr
    records = outputs(out)

    # Purchase data older than 2 years: gone from every personal store, with tombstones.
    tombstones = {(r["topic"], r["key"]) for r in records if r["value"] is None}
    for topic in ("personal.line_items", "marketing.signals", "ereceipts.archive"):
        assert (topic, "CUST-1/R-OLD-1") in tombstones
        assert (topic, "CUST-1/R-MID-1") not in tombstones
    ex = json.loads(cli("extract", "--state-dir", str(state), "--customer", "CUST-1").stdout)
    assert [r["receipt_id"] for r in ex["receipt_totals"]] == ["R-MID-1", "R-NEW-1"]
    assert sorted({li["receipt_id"] for li in ex["line_items"]}) == ["R-MID-1", "R-NEW-1"]
    assert [e["receipt_id"] for e in ex["e_receipts"]] == ["R-MID-1", "R-NEW-1"]
    # The recall index keeps one year: the mid-aged purchase is no longer found.
    assert [r["receipt_id"] for r in ex["recall_index"]] == ["R-NEW-1"]
    ex2 = json.loads(cli("extract", "--state-dir", str(state), "--customer", "CUST-2").stdout)
    assert ex2["receipt_totals"] == [] and ex2["recall_index"] == []
    found, _ = recall(state, "2024-10-01", "2025-12-31")
    assert found == []
    found, _ = recall(state, "2026-11-01", "2026-11-30")
    assert [n["customer_id"] for n in found] == ["CUST-1"]

    # Counters of months wholly older than two years go, with a removal record; younger stay.
    removed = [
        r["value"] for r in records if r["topic"] == "smobiili.counters" and r["value"]["removed"]
    ]
    assert [(c["customer_id"], c["month"]) for c in removed] == [("CUST-1", "2024-10")]
    assert sorted(ex["counters"]) == ["2025-06", "2026-11"]

    # The purge is audited (no person named: it is the system's own duty).
    purge = [r["value"] for r in records if r["topic"] == "audit.log"]
    assert purge and {a["action"] for a in purge} == {"retention_purge"}
    assert {a["subject_customer_id"] for a in purge} == {None}

    # The household ledger keeps its Bonus figures, not the old receipt lists.
    bonus = json.loads(
        cli("bonus", "--state-dir", str(state), "--household", "H1", "--month", "2024-10").stdout
    )
    assert bonus["eligible_cents"] == 398 and bonus["receipt_count"] == 1

    # A second sweep at the same time finds nothing more.
    out2 = tmp_path / "again.jsonl"
    res = cli("replay", str(empty), "--state-dir", str(state), "--now", NOW, "--out", str(out2))
    assert res.returncode == 0, res.stderr
    assert [r for r in outputs(out2) if r["value"] is None] == []


def test_a_consent_tombstone_erases_the_person_but_not_the_household_bonus(
    tmp_path: Path,
) -> None:
    state = build(tmp_path)
    erase = write(
        tmp_path / "erase.jsonl",
        [{"topic": "customer.consents", "key": "CUST-1", "value": None, "timestamp": NEW + 1000}],
    )
    out = tmp_path / "erase-out.jsonl"
    res = cli("replay", str(erase), "--state-dir", str(state), "--out", str(out))
    assert res.returncode == 0, res.stderr
    ex = json.loads(cli("extract", "--state-dir", str(state), "--customer", "CUST-1").stdout)
    for store in ("receipt_totals", "line_items", "marketing_signals", "e_receipts"):
        assert ex[store] == [], store
    assert ex["recall_index"] == [] and ex["consent"] is None
    assert any(
        r["topic"] == "audit.log" and r["value"]["action"] == "erasure" for r in outputs(out)
    )
    found, _ = recall(state, "2024-10-01", "2024-10-31")
    assert [n["customer_id"] for n in found] == ["CUST-2"]
    bonus = json.loads(
        cli("bonus", "--state-dir", str(state), "--household", "H1", "--month", "2026-11").stdout
    )
    assert bonus["eligible_cents"] == 398
