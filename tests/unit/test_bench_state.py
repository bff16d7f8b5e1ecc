"""The national-size state figure builds the tables in place (benchmarks/state.py): the state
it writes must be exactly what the worker's code path stores for the same register."""

from __future__ import annotations

from pathlib import Path

import orjson
from rocksdict import Rdict

from benchmarks import state as bench_state
from stream.engine.partitioning import key_partition
from stream.settings import load_rules
from stream.tools.replay import Driver, encode_event
from topologies import card_join, household_bonus, personal_routing

BUILT = (card_join.STAGE, personal_routing.STAGE, household_bonus.STAGE)

PARTITIONS = 4
CUSTOMERS = 300


def _built(tmp_path: Path) -> tuple[dict[str, dict[str, object]], dict[str, object]]:
    dbs = {}
    states = {}
    for stage in BUILT:
        for p in range(PARTITIONS):
            db = dbs[(stage, p)] = Rdict(
                str(tmp_path / f"{stage}-{p}"), options=bench_state._rdict_options()
            )
            states[(stage, p)] = bench_state._PartitionState(db)
    info = bench_state._build(CUSTOMERS, PARTITIONS, states)
    out: dict[str, dict[str, object]] = {stage: {} for stage in BUILT}
    for (stage, _p), db in dbs.items():
        out[stage].update({k.decode(): orjson.loads(v) for k, v in db.items()})
        db.close()
    return out, info


def test_built_state_equals_what_replay_stores_for_the_same_register(tmp_path: Path) -> None:
    built, info = _built(tmp_path)
    driver = Driver(load_rules())
    for event in bench_state._register(CUSTOMERS):
        driver.feed(*encode_event(driver.codec, event))
    for stage in BUILT:
        replayed = dict(driver.states[stage].items(""))
        assert built[stage] == replayed, stage
    assert info["rejected"] == 0
    # One changelog record per write: every entry once, the sweep marks (meta|) a few times.
    # Per customer: the card's history and the consent, and the register's propagation to the
    # person (reg|) and to the household (hreg|).
    entries = [k for v in built.values() for k in v]
    assert len([k for k in entries if not k.startswith("meta|")]) == 4 * CUSTOMERS
    assert len(entries) <= info["state_writes"] <= len(entries) + 2 * PARTITIONS * 4
    assert len([k for k in built[card_join.STAGE] if k.startswith("card|")]) == CUSTOMERS
    assert len([k for k in built[personal_routing.STAGE] if k.startswith("consent|")]) == CUSTOMERS


def test_each_entry_is_on_the_partition_of_its_records_key(tmp_path: Path) -> None:
    _built(tmp_path)
    for p in range(PARTITIONS):
        db = Rdict(str(tmp_path / f"{card_join.STAGE}-{p}"), options=bench_state._rdict_options())
        keys = db.keys()  # not iter(db): rocksdict raises KeyError in raw mode
        cards = [k.decode().split("|", 1)[1] for k in keys if k.startswith(b"card|")]
        db.close()
        assert cards and all(key_partition(c, PARTITIONS) == p for c in cards)


def test_register_card_numbers_pass_the_luhn_check() -> None:
    for i in (0, 1, 12345, 3_999_999):
        digits = [int(d) for d in bench_state.card_number(i)]
        total = sum(digits[-1::-2]) + sum(sum(divmod(2 * d, 10)) for d in digits[-2::-2])
        assert len(digits) == 16 and total % 10 == 0
