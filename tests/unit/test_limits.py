"""Limits at the door and the commit rule's dead letters, through the replay driver.

Issue findings reproduced here: a receipt dated 1970-01-01 produced a Bonus statement for
1970-01 and one dated 3000 opened a tally for 3000-01; a sale with negative quantities and
positive amounts was counted; a 10,000-line receipt became a 1.15 MB record that the broker
refused. Each limit dead-letters the receipt with its reason before anything is stored, and
nothing of it reaches the Bonus ledger, the counters or the aggregates.
"""

from __future__ import annotations

import dataclasses

import pytest

from stream.engine.runner import DLQ_TOPIC, RawRecord, Runner
from stream.serde.codec import Codec
from stream.serde.registry_store import InMemoryRegistry
from stream.settings import load_rules
from stream.tools.replay import Driver
from tests.unit.topo_helpers import DAY_MS, GTIN_MILK, MINUTE_MS, card, line, receipt
from topologies import household_bonus
from topologies.pipeline import STAGE_BY_NAME
from topologies.queries import household_bonus as bonus_queries
from topologies.records import Emit, StepResult
from topologies.state import MemoryState, StagedState

RULES = load_rules()
NOW = 1_764_000_000_000  # 2025-11-24, the broker timestamp of the receipts below


def drive(*receipts: dict, rules=RULES, now: int = NOW) -> tuple[Driver, list[tuple]]:
    out: list = []
    driver = Driver(rules, sink=out.append)
    c = card()
    codec = driver.codec
    driver.feed(
        "customer.cards",
        codec.encode_key(c["card_number"]),
        codec.encode("customer.cards", c),
        now - DAY_MS,
    )
    for r in receipts:
        driver.feed(
            "pos.receipts", codec.encode_key(r["card_number"]), codec.encode("pos.receipts", r), now
        )
    return driver, out


def dead_letters(driver: Driver, out: list) -> list[str]:
    return [driver.codec.decode(DLQ_TOPIC, o.value)["reason"] for o in out if o.topic == DLQ_TOPIC]


def nothing_counted(driver: Driver, out: list) -> None:
    """No trace of a receipt anywhere: no output but the dead letter, no ledger tally."""
    assert [o.topic for o in out if o.topic != DLQ_TOPIC] == []
    bonus_state = driver.states[household_bonus.STAGE]
    # Only the card's register entry (who is in the household), nothing of the receipt.
    assert [k for k, _ in bonus_state.items("") if not k.startswith("hreg|")] == []
    agg_state = driver.states["group_aggregates"]
    assert list(agg_state.items("agg|")) == []


@pytest.mark.parametrize(
    ("purchased_at", "month"),
    [(0 + 3_600_000, "1970-01"), (32_503_680_000_000, "3000-01")],
)
def test_implausible_purchase_time_is_dead_lettered(purchased_at: int, month: str) -> None:
    driver, out = drive(receipt("R-T", purchased_at=purchased_at))
    assert dead_letters(driver, out) == ["implausible_time"]
    nothing_counted(driver, out)
    state = driver.states[household_bonus.STAGE]
    assert bonus_queries.query(state, "HH-0001", month) is None


def test_lateness_and_skew_limits_are_inclusive_and_configurable() -> None:
    rules = dataclasses.replace(RULES, max_lateness_ms=2 * DAY_MS, max_clock_skew_ms=MINUTE_MS)
    on_edge = [
        receipt("R-LATE", purchased_at=NOW - 2 * DAY_MS),
        receipt("R-SKEW", purchased_at=NOW + MINUTE_MS),
    ]
    beyond = [
        receipt("R-LATE2", purchased_at=NOW - 2 * DAY_MS - 1),
        receipt("R-SKEW2", purchased_at=NOW + MINUTE_MS + 1),
    ]
    driver, out = drive(*on_edge, *beyond, rules=rules)
    assert dead_letters(driver, out) == ["implausible_time", "implausible_time"]
    totals = [o for o in out if o.topic == "receipts.totals"]
    assert len(totals) == 2


def test_opposite_signs_on_a_line_are_dead_lettered() -> None:
    # A "sale" of negative quantities at positive amounts (the finding), and the mirror.
    sale = receipt("R-NEG", purchased_at=NOW, lines=[line(1, GTIN_MILK, 189, quantity_milli=-1000)])
    ret = receipt(
        "R-RET",
        purchased_at=NOW,
        lines=[line(1, GTIN_MILK, -189, quantity_milli=1000)],
        original_receipt_id="R-0",
    )
    driver, out = drive(sale, ret)
    assert dead_letters(driver, out) == ["sign_mismatch", "sign_mismatch"]
    nothing_counted(driver, out)


def test_a_return_negative_in_both_is_accepted() -> None:
    ret = receipt(
        "R-RET",
        purchased_at=NOW,
        lines=[line(1, GTIN_MILK, -189, quantity_milli=-1000)],
        original_receipt_id="R-0",
    )
    driver, out = drive(ret)
    assert dead_letters(driver, out) == []


def test_too_many_lines_is_dead_lettered_with_its_bytes() -> None:
    lines = [line(i, GTIN_MILK, 1) for i in range(1, RULES.max_lines_per_receipt + 2)]
    big = receipt("R-BIG", purchased_at=NOW, lines=lines)
    driver, out = drive(big)
    dls = [driver.codec.decode(DLQ_TOPIC, o.value) for o in out if o.topic == DLQ_TOPIC]
    assert [d["reason"] for d in dls] == ["too_many_lines"]
    assert driver.codec.decode("pos.receipts", dls[0]["value"])["receipt_id"] == "R-BIG"
    nothing_counted(driver, out)


def test_the_10000_line_receipt_of_the_finding_is_dead_lettered() -> None:
    lines = [line(i, GTIN_MILK, 1) for i in range(1, 10_001)]
    driver, out = drive(receipt("R-10K", purchased_at=NOW, lines=lines))
    assert dead_letters(driver, out) == ["too_many_lines"]
    nothing_counted(driver, out)


def test_a_receipt_whose_identified_record_would_be_too_large_is_refused_at_the_door() -> None:
    # Within the line limit, but with long product codes: its JSON on receipts.identified
    # would exceed the record limit. Refused before it is parked or routed.
    rules = dataclasses.replace(RULES, max_record_bytes=50_000)
    lines = [line(i, "9" * 500, 1) for i in range(1, 101)]
    driver, out = drive(receipt("R-WIDE", purchased_at=NOW, lines=lines), rules=rules)
    assert dead_letters(driver, out) == ["output_too_large"]
    nothing_counted(driver, out)


# --- the runner: an output that cannot be sent dead-letters its input, state untouched ------


class _Stage:
    """A stage whose step writes state and emits what the test gives it."""

    def __init__(self, emit: Emit) -> None:
        self.name = "probe"
        self.emit = emit
        self.gauge = None  # topologies.pipeline.Stage: no state gauge

    def step(self, ctx, state, topic, key, value) -> StepResult:
        state.set("written|1", {"n": 1})
        return StepResult(emits=[self.emit])


def _process(emit: Emit, rules=RULES) -> tuple[list, MemoryState, Codec]:
    codec = Codec(InMemoryRegistry())
    state = MemoryState()
    runner = Runner(codec, rules)
    # A tombstone on customer.cards: decodes without a registry, so the probe step runs.
    rec = RawRecord("customer.cards", 0, 7, NOW, b"K", None)
    out = runner.process(_Stage(emit), state, rec)  # type: ignore[arg-type]
    return out, state, codec


def test_an_output_over_the_record_limit_dead_letters_the_input_and_keeps_no_state() -> None:
    rules = dataclasses.replace(RULES, max_record_bytes=2_000)
    emit = Emit("receipts.identified", "C-1", {"blob": "x" * 5_000})
    out, state, codec = _process(emit, rules)
    assert [o.topic for o in out] == [DLQ_TOPIC]
    dl = codec.decode(DLQ_TOPIC, out[0].value)
    assert (dl["reason"], dl["offset"], dl["key"]) == ("output_too_large", 7, b"K")
    assert state.data == {}


def test_an_output_that_cannot_be_encoded_dead_letters_the_input_and_keeps_no_state() -> None:
    # A sum beyond Avro's long (a step fed extreme amounts) cannot be written.
    emit = Emit("aggregates.group", "S|D", {"store_id": "S", "total_cents": 2**70})
    out, state, codec = _process(emit)
    assert [codec.decode(DLQ_TOPIC, o.value)["reason"] for o in out] == ["output_invalid"]
    assert state.data == {}


def test_a_step_that_raises_keeps_no_half_written_state() -> None:
    class Boom(_Stage):
        def step(self, ctx, state, topic, key, value) -> StepResult:
            state.set("half|1", 1)
            raise ZeroDivisionError

    codec = Codec(InMemoryRegistry())
    state = MemoryState()
    out = Runner(codec, RULES).process(
        Boom(Emit("x", None, None)),  # type: ignore[arg-type]
        state,
        RawRecord("customer.cards", 0, 1, NOW, b"K", None),
    )
    assert [codec.decode(DLQ_TOPIC, o.value)["reason"] for o in out] == ["processing_error"]
    assert state.data == {}


def test_a_dead_letter_over_the_limit_keeps_its_position_without_the_bytes() -> None:
    rules = dataclasses.replace(RULES, max_record_bytes=5_000)
    codec = Codec(InMemoryRegistry())
    runner = Runner(codec, rules)
    rec = RawRecord("pos.receipts", 3, 99, NOW, b"K", b"\x00" * 6_000)
    [out] = runner.process(STAGE_BY_NAME["card_join"], MemoryState(), rec)
    dl = codec.decode(DLQ_TOPIC, out.value)
    assert (dl["topic"], dl["partition"], dl["offset"], dl["value"]) == (
        "pos.receipts",
        3,
        99,
        None,
    )
    assert "6001 bytes not copied" in dl["error"]
    assert len(out.value) <= 5_000


# --- the staging layer ----------------------------------------------------------------------


def test_staged_state_reads_its_own_writes_and_applies_them_in_last_write_order() -> None:
    inner = MemoryState()
    inner.set("a|1", 1)
    inner.set("a|3", 3)
    applied: list[str] = []
    real_set, real_delete = inner.set, inner.delete
    inner.set = lambda k, v: (applied.append(k), real_set(k, v))  # type: ignore[method-assign]
    inner.delete = lambda k: (applied.append(k), real_delete(k))  # type: ignore[method-assign]
    staged = StagedState(inner)
    staged.set("a|2", 2)
    staged.delete("a|1")
    staged.set("x|1", "agg")
    staged.set("a|2", 22)  # rewritten last: applied after x|1
    assert staged.get("a|1") is None and staged.get("a|2") == 22 and staged.get("a|3") == 3
    assert list(staged.items("a|")) == [("a|2", 22), ("a|3", 3)]
    assert inner.data == {"a|1": 1, "a|3": 3}  # nothing applied yet
    assert staged.commit() == 3
    assert applied == ["a|1", "x|1", "a|2"]
    assert inner.data == {"a|2": 22, "a|3": 3, "x|1": "agg"}


def test_staged_state_discard_leaves_the_state_as_it_was() -> None:
    inner = MemoryState()
    inner.set("k", 1)
    staged = StagedState(inner)
    staged.set("k", 2)
    staged.delete("k")
    staged.discard()
    assert staged.commit() == 0
    assert inner.data == {"k": 1}


def test_records_out_counts_the_dead_letters_of_undecodable_records() -> None:
    # Finding 5: records_out_total{topic="deadletters"} read 3 while 23 were written -- the
    # dead letters of undecodable records were not counted.
    from stream.engine.metrics import Metrics

    metrics = Metrics()
    runner = Runner(Codec(InMemoryRegistry()), RULES, metrics)
    for i in range(3):
        runner.process(
            STAGE_BY_NAME["card_join"],
            MemoryState(),
            RawRecord("pos.receipts", 0, i, NOW, b"K", b"\x00garbage"),
        )
    value = metrics.registry.get_sample_value(
        "purchase_stream_records_out_total", {"topic": DLQ_TOPIC}
    )
    assert value == 3


def test_a_purchase_after_2100_is_implausible_even_with_a_broken_broker_clock() -> None:
    far = 253_370_764_800_000  # 9999-01-01: the broker stamped it then too
    driver, out = drive(receipt("R-FAR", purchased_at=far), now=far)
    assert dead_letters(driver, out) == ["implausible_time"]


def test_amounts_beyond_any_till_are_dead_lettered_at_the_door() -> None:
    # Sums of such lines overflowed the outputs' 64-bit integers behind the door.
    big = [line(1, GTIN_MILK, 2**61), line(2, GTIN_MILK, 2**61)]
    heavy = [line(1, GTIN_MILK, 100, quantity_milli=2**62)]
    driver, out = drive(
        receipt("R-BIG", purchased_at=NOW, lines=big),
        receipt("R-HEAVY", purchased_at=NOW, lines=heavy),
    )
    assert dead_letters(driver, out) == ["implausible_amount", "implausible_amount"]
    nothing_counted(driver, out)


def test_a_dead_letters_error_is_bounded_and_keeps_the_input_bytes() -> None:
    # The detail of bad_unit quotes the unit: 300 KB of it must not crowd out the input.
    codec = Codec(InMemoryRegistry())
    runner = Runner(codec, RULES)
    bad = receipt("R-G", purchased_at=NOW, lines=[line(1, GTIN_MILK, 1, unit="X" * 300_000)])
    value = codec.encode("pos.receipts", bad)
    rec = RawRecord("pos.receipts", 0, 1, NOW, b"CARD-0001", value)
    [out] = runner.process(STAGE_BY_NAME["card_join"], MemoryState(), rec)
    dl = codec.decode(DLQ_TOPIC, out.value)
    assert dl["reason"] == "bad_unit"
    assert len(dl["error"]) <= 500 and dl["value"] == value
