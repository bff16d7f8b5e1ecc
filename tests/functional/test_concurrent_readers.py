"""``bonus`` and ``extract`` read a replay state directory read-only, so they run side by side.

Two queries at once on one state dir used to fail with ``IO error: While lock file:
.../household_bonus/LOCK: Resource temporarily unavailable`` (RocksDB's lock, taken by a
writer open). Here the test holds each database open for writing for the whole run (as a
``replay`` still running would), so the queries surely overlap with another process, and
starts the two queries of each kind together.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from stream.engine.state import RocksState
from stream.simulator.config import SimConfig, SimStats
from stream.simulator.generator import generate
from topologies import household_bonus
from topologies.personal_routing import STAGE as PERSONAL_STAGE

HELSINKI = ZoneInfo("Europe/Helsinki")


def cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def together(*args: str) -> list[str]:
    """Two runs of the same query started at once; each one's stdout (both must succeed)."""
    procs = [cli(*args), cli(*args)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "LOCK" not in err, err
        outs.append(out)
    return outs


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    """A replayed state dir, with a customer and a household-month that have receipts."""
    tmp = tmp_path_factory.mktemp("readers")
    events = list(generate(SimConfig(seed=5, households=20, receipts=300), SimStats()))
    src = tmp / "events.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    state = tmp / "state"
    res = subprocess.run(
        [sys.executable, "-m", "stream.cli", "replay", str(src), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    cards = {e["key"]: e["value"] for e in events if e["topic"] == "customer.cards"}
    receipt = next(
        e["value"]
        for e in events
        if e["topic"] == "pos.receipts" and e["value"]["card_number"] in cards
    )
    link = cards[receipt["card_number"]]
    month = (
        datetime.fromtimestamp(receipt["purchased_at"] / 1000, UTC)
        .astimezone(HELSINKI)
        .strftime("%Y-%m")
    )
    return state, link["customer_id"], link["household_id"], month


def test_two_bonus_queries_at_once_give_the_same_answer(
    replayed: tuple[Path, str, str, str],
) -> None:
    state, _customer, household, month = replayed
    held = RocksState(state / household_bonus.STAGE)  # a writer holds its LOCK meanwhile
    try:
        outs = together(
            "bonus", "--state-dir", str(state), "--household", household, "--month", month
        )
    finally:
        held.close()
    first, second = (json.loads(o) for o in outs)
    assert first == second
    assert first["household_id"] == household and first["month"] == month
    assert first["receipt_count"] >= 1


def test_two_extracts_at_once_give_the_same_answer_and_are_both_audited(
    replayed: tuple[Path, str, str, str],
) -> None:
    state, customer, _household, _month = replayed
    audit = state / "audit.log.jsonl"
    before = audit.read_bytes().count(b"\n") if audit.exists() else 0
    held = RocksState(state / PERSONAL_STAGE)
    try:
        outs = together("extract", "--state-dir", str(state), "--customer", customer)
    finally:
        held.close()
    first, second = (json.loads(o) for o in outs)
    assert first == second
    assert first["customer_id"] == customer and first["receipt_totals"]
    lines = audit.read_bytes().splitlines()[before:]
    reads = [orjson.loads(x)["value"] for x in lines]
    who = [(r["action"], r["subject_customer_id"]) for r in reads]
    assert who == [("read_extract", customer)] * 2


def test_a_read_only_state_refuses_writes(tmp_path: Path) -> None:
    writer = RocksState(tmp_path / "db")
    writer.set("k", {"v": 1})
    writer.close()
    reader = RocksState(tmp_path / "db", read_only=True)
    try:
        assert reader.get("k") == {"v": 1}
        with pytest.raises(Exception, match="read only"):
            reader.set("k", {"v": 2})
    finally:
        reader.close()


def test_bonus_is_audited_before_its_answer_is_released(
    replayed: tuple[Path, str, str, str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # Found in review: `bonus` printed the household's figures and only then appended its
    # audit record, so an answer could leave with no record (a failed append, a closed pipe).
    # The rule is the API's: no answer without its audit record.
    import argparse

    from stream.cli import requests
    from stream.tools import replay

    state, _customer, household, month = replayed

    def audit_store_down(*_args: object, **_kwargs: object) -> None:
        raise OSError("audit store unavailable")

    monkeypatch.setattr(replay, "append_audit", audit_store_down)
    args = argparse.Namespace(
        state_dir=str(state),
        household=household,
        month=month,
        requested_by="staff:test",
        purpose="customer_service",
    )
    with pytest.raises(OSError, match="audit store unavailable"):
        requests.cmd_bonus(args)
    assert capsys.readouterr().out == ""
