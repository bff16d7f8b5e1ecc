"""A simulated month and a half through ``replay``: every household's Bonus tally checked
against an independent computation from the input events.

The model below follows the input in file order with the domain rules written out again
(card links, parking and release, closed cards, erasures, dedupe per household) and the
Bonus table of docs/domain.md §4 with Decimal arithmetic, not the topology's code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from stream.engine.state import RocksState
from stream.simulator.config import SimConfig, SimStats
from stream.simulator.generator import generate
from topologies.queries.household_bonus import household_bonus_month

HELSINKI = ZoneInfo("Europe/Helsinki")
HOUR = 3_600_000
WINDOW = 30 * 24 * HOUR
# docs/domain.md §4, in euros and percent, as published.
TIERS = [
    (50, "1"),
    (200, "1.5"),
    (300, "2"),
    (400, "2.5"),
    (500, "3"),
    (600, "3.5"),
    (700, "4"),
    (800, "4.5"),
    (900, "5"),
]


def month_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(HELSINKI).strftime("%Y-%m")


def percent_for(eligible_cents: int) -> Decimal:
    rate = Decimal(0)
    for euros, pct in TIERS:
        if Decimal(max(eligible_cents, 0)) / 100 >= euros:
            rate = Decimal(pct)
    return rate


def cents(base_cents: int, pct: Decimal) -> int:
    value = Decimal(max(base_cents, 0)) * pct / 100
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


class Model:
    def __init__(self, bad: set[str]) -> None:
        self.bad = bad
        self.cards: dict[str, dict[str, Any] | None] = {}  # None = closed
        self.parked: dict[str, list[tuple[dict[str, Any], int]]] = defaultdict(list)
        self.next_sweep: int | None = None
        self.routed: dict[tuple[str, str], str] = {}  # (customer, receipt) -> household
        self.erased: dict[str, int] = {}
        self.counted: set[tuple[str, str]] = set()
        self.tally: dict[tuple[str, str], dict[str, Any]] = {}
        self.clock = 0

    def event(self, e: dict[str, Any]) -> None:
        topic, value, now = e["topic"], e["value"], e["timestamp"]
        if topic == "customer.cards":
            self.cards[e["key"]] = value
            for receipt, _ in self.parked.pop(e["key"], []):
                if value is not None:
                    self.personal(receipt, value)
            self.sweep(now)
        elif topic == "pos.receipts":
            self.receipt(value)
            self.sweep(now)
        elif topic == "customer.consents" and value is None:
            self.erased[e["key"]] = now
            for k in [k for k in self.routed if k[0] == e["key"]]:
                del self.routed[k]

    def receipt(self, r: dict[str, Any]) -> None:
        if r["receipt_id"] in self.bad or r["card_number"] is None:
            return
        card = r["card_number"]
        if card not in self.cards:
            self.parked[card].append((r, self.clock))
            return
        link = self.cards[card]
        if link is not None:
            self.personal(r, link)

    def sweep(self, now: int) -> None:
        if self.next_sweep is not None and now < self.next_sweep:
            return
        self.next_sweep = now + HOUR
        for card in list(self.parked):
            self.parked[card] = [(r, t) for r, t in self.parked[card] if t > now - WINDOW]
            if not self.parked[card]:
                del self.parked[card]

    def personal(self, r: dict[str, Any], link: dict[str, Any]) -> None:
        cid, rid = link["customer_id"], r["receipt_id"]
        if (cid, rid) in self.routed:
            return  # a redelivery: the stored total is re-sent, the ledger drops it
        if not (cid in self.erased and r["purchased_at"] <= self.erased[cid]):
            self.routed[(cid, rid)] = link["household_id"]
        self.bonus(link["household_id"], cid, r)

    def bonus(self, hh: str, cid: str, r: dict[str, Any]) -> None:
        if (hh, r["receipt_id"]) in self.counted:
            return
        self.counted.add((hh, r["receipt_id"]))
        t = self.tally.setdefault(
            (hh, month_of(r["purchased_at"])),
            {"eligible": 0, "count": 0, "members": defaultdict(int), "benefit_base": 0},
        )
        t["eligible"] += r["bonus_eligible_cents"]
        t["count"] += 1
        t["members"][cid] += r["bonus_eligible_cents"]
        if r["payment_method"] == "S_ETUKORTTI_PAYMENT" and r["chain"] != "PARTNER":
            t["benefit_base"] += r["bonus_eligible_cents"]


def test_simulated_month_tallies_match_an_independent_sum(tmp_path: Path) -> None:
    stats = SimStats()
    # ~45 days of event time: crosses the end of November and its close on 10 December.
    cfg = SimConfig(seed=21, households=300, receipts=6000, receipts_per_second=6000 / (45 * 86400))
    events = list(generate(cfg, stats))
    src = tmp_path / "month.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    state_dir = tmp_path / "state"
    out = tmp_path / "out.jsonl"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "replay",
            str(src),
            "--state-dir",
            str(state_dir),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["bad_lines"] == 0

    model = Model(set(stats.bad))
    for e in events:
        model.clock = e["timestamp"]
        model.event(e)
    assert len(model.tally) > 300  # many households, two months

    state = RocksState(state_dir / "household_bonus")
    try:
        for (hh, month), t in sorted(model.tally.items()):
            got = household_bonus_month(state, hh, month)
            pct = percent_for(t["eligible"])
            want = {
                "eligible_cents": t["eligible"],
                "receipt_count": t["count"],
                "rate_bp": int(pct * 100),
                "bonus_cents": cents(t["eligible"], pct),
                "payment_benefit_eligible_cents": t["benefit_base"],
                "payment_benefit_cents": cents(t["benefit_base"], Decimal("0.5")),
                "members": dict(sorted(t["members"].items())),
            }
            assert {k: got[k] for k in want} == want, (hh, month)
    finally:
        state.close()

    # November closed on 10 December (Helsinki): a statement per household-month of November.
    records = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    statements = {
        (r["value"]["household_id"], r["value"]["month"])
        for r in records
        if r["topic"] == "bonus.statements" and r["value"]["seq"] == 0
    }
    november = {k for k in model.tally if k[1] == "2026-11"}
    assert statements >= november and november

    # The CLI prints the same figures.
    hh, month = sorted(model.tally)[0]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "bonus",
            "--state-dir",
            str(state_dir),
            "--household",
            hh,
            "--month",
            month,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    printed = json.loads(res.stdout)
    assert printed["eligible_cents"] == model.tally[(hh, month)]["eligible"]
    assert set(printed) >= {
        "household_id",
        "month",
        "eligible_cents",
        "rate_bp",
        "bonus_cents",
        "payment_benefit_eligible_cents",
        "payment_benefit_cents",
        "receipt_count",
        "members",
    }
