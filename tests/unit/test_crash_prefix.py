"""Exactly once in every sum, whatever a crash keeps of a stage's changelog.

A crash (``kill -9``, power) leaves on the broker a *prefix* of each changelog partition's
writes (the producer is idempotent: in order, no gaps), commits nothing that was not
delivered, and the next owner restores the state from that prefix (local state after a
crash is discarded, stream/engine/worker.py) and is redelivered every record since the last
commit, with the same broker timestamps. For each stage, this test cuts the changelog at
many points, restores, redelivers every input from the start (the oldest possible commit),
and requires the state to end *exactly* as without the crash: every tally, aggregate,
counter and ledger entry counted once. The inputs are a simulated day with duplicates,
late receipts, returns, card and consent changes.
"""

from __future__ import annotations

import random

import pytest

from stream.engine.runner import RawRecord, Runner
from stream.settings import load_rules
from stream.simulator.config import SimConfig
from stream.simulator.generator import generate
from stream.tools.replay import Driver, encode_event
from tests.conftest import CHAOS_FULL
from tests.unit.topo_helpers import ChangelogState, cut_and_restore
from topologies.pipeline import STAGE_BY_NAME, STAGES
from topologies.state import MemoryState

RULES = load_rules()
# Cut points per stage: a sample under `make test`, every write under `make chaos`.
CUTS = 100


def _stage_inputs() -> tuple[dict[str, list[RawRecord]], Runner]:
    """Every record each stage receives when a simulated stream is replayed, and a runner
    with that replay's codec (schema ids) and catalogue."""
    seen: dict[str, list[RawRecord]] = {s.name: [] for s in STAGES}
    driver = Driver(RULES)
    process = driver.runner.process

    def capture(stage, state, rec):  # type: ignore[no-untyped-def]
        seen[stage.name].append(rec)
        return process(stage, state, rec)

    driver.runner.process = capture  # type: ignore[method-assign]
    cfg = SimConfig(seed=11, households=40, receipts=300, receipts_per_second=0.05)
    for event in generate(cfg):
        driver.feed(*encode_event(driver.codec, event))
    return seen, Runner(driver.codec, RULES, catalog=driver.catalog)


INPUTS, RUNNER = _stage_inputs()


def _run(stage_name: str, state: MemoryState, records: list[RawRecord]) -> None:
    stage = STAGE_BY_NAME[stage_name]
    for rec in records:
        RUNNER.process(stage, state, rec)


@pytest.mark.chaos
@pytest.mark.parametrize("stage_name", [s.name for s in STAGES if not s.is_global])
def test_a_crash_at_any_changelog_write_counts_every_receipt_once(stage_name: str) -> None:
    records = INPUTS[stage_name]
    assert len(records) > 100
    clean = ChangelogState()
    _run(stage_name, clean, records)
    rng = random.Random(stage_name)
    every = range(len(clean.log) + 1)
    cuts = every if CHAOS_FULL else sorted({0, len(clean.log), *rng.sample(every, CUTS)})
    for cut in cuts:
        restored = cut_and_restore(clean, cut)
        _run(stage_name, restored, records)
        assert _sums(restored) == _sums(clean), f"{stage_name}: crash after changelog write {cut}"


def _sums(state: MemoryState) -> dict[str, object]:
    # Everything but the sweeps' schedule (``meta|``): when the next sweep is due depends on
    # which record ran the last one, and a sweep only drops what is past its window.
    return {k: v for k, v in state.data.items() if not k.startswith("meta|")}
