"""Fuzzing the four input topics through the replay driver (issue 16).

Every record here goes through :class:`stream.tools.replay.Driver`, i.e. the runner and the stage
code the worker runs. The inputs are what a broken or hostile producer can put on a topic:

- raw bytes: random, and valid Confluent-framed Avro with its magic byte, schema id or body
  mutated (the schema ids include an older version of ``Receipt`` and the ids of other
  topics' schemas);
- schema-valid values drawn from the ``.avsc`` files (:mod:`tests.avro_strategies`): int64
  bounds, empty, long and odd unicode strings, ``|``, NaN, nulls in unions, huge arrays --
  mixed with plausible domain values so that records get past the first rule check;
- streams of all four topics together, valid and broken records mixed.

Properties:

1. ``Driver.feed`` never raises, and nothing is dead-lettered as ``processing_error`` (the
   runner's catch-all for a bug in a step);
2. a dead letter names a bounded reason code (one a topology, the codec or the runner
   declares) and carries the original topic, offset, key and value bytes of its record; no
   input record is dead-lettered twice;
3. the same stream replayed twice on fresh state leaves the same state and the same outputs
   (and RocksDB state equals memory state);
4. for streams of valid cards, consents, catalogue entries and receipts that refer to each
   other: no line item reaches a consent-gated store (personal line items, marketing
   signals, e-receipts) unless the purchaser's flag was on without a break from the purchase
   time until it was stored, judged by an oracle written from docs/domain.md §3, not from
   ``topologies/consent.py``; and what is left in those stores at the end is still consented.

``make test`` runs the default hypothesis profile (250 examples per test); ``make chaos``
sets ``PURCHASE_STREAM_CHAOS=full`` (10,000 per test, so per input topic). Regression
examples found by the fuzzer are kept as plain tests at the end.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from stream.engine.runner import DLQ_TOPIC, Outgoing
from stream.local.topics import TOPICS
from stream.serde import codec as codec_module
from stream.serde.codec import Codec
from stream.serde.registry_store import InMemoryRegistry
from stream.settings import load_rules
from stream.tools.replay import INPUT_TOPICS, Driver
from tests.avro_strategies import LONG_MAX, LONG_MIN, LONGS, for_record, strings
from topologies.consent import E_RECEIPTS, FLAGS, MARKETING_TARGETING, PRODUCT_LEVEL_SERVICES
from topologies.rules import DAY_MS

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[2]
RULES = load_rules()

# One codec for every run: its caches (schema ids, compiled readers) are not state that a
# replay could change, and compiling the 16 schemas per example would dominate the run time.
REGISTRY = InMemoryRegistry()
CODEC = Codec(REGISTRY)
CODEC.warm()
# An older version of the receipt schema (no original_receipt_id): records written with it
# take the schema-resolution path of the codec (fastavro), not the compiled reader.
_PREVIOUS_RECEIPT = json.loads((ROOT / "tests/unit/data/Receipt.previous.avsc").read_text())
PREVIOUS_RECEIPT_ID = REGISTRY.register("pos.receipts-value", json.dumps(_PREVIOUS_RECEIPT))
SCHEMA_IDS = sorted({*CODEC.register_all().values(), PREVIOUS_RECEIPT_ID})

TOPIC_SCHEMA = {t: TOPICS[t].schema for t in INPUT_TOPICS}
# The field that a record is keyed by on each input topic (the receipt: its card).
KEY_FIELD = {
    "product.catalog": "gtin",
    "customer.cards": "card_number",
    "customer.consents": "customer_id",
    "pos.receipts": "card_number",
}


def _declared_reason_codes() -> frozenset[str]:
    """Every reason code the code base can put on a dead letter: the ``Reject("code", ...)``
    literals of the topologies and the stream package, and the codec's decode errors."""
    codes = set(codec_module.DECODE_ERROR_CODES)
    for path in [*(ROOT / "topologies").glob("*.py"), *(ROOT / "stream").glob("*.py")]:
        codes.update(re.findall(r'Reject\(\s*"([a-z0-9_]+)"', path.read_text()))
    return frozenset(codes)


REASON_CODES = _declared_reason_codes()
DLQ_LIMIT = RULES.record_limit(DLQ_TOPIC)

# The properties once left out receipts past the latest time the code handles (see below);
# the door's absolute time limit (implausible_time after 2100) now dead-letters them.
AWAITING_LEAD = False
# The latest purchase time the code handles: 9999-11-01T00:00Z. Later, the Helsinki date
# (from 9999-12-31T22:00Z) or the close of the Bonus month (9999-12 closes in year 10000) is
# past datetime's range and the step raises. implausible_time (topologies/validation.py)
# bounds a purchase by the broker timestamp only, which a producer sets (CreateTime).
MAX_DATETIME_MS = 253_397_030_400_000


def awaiting_lead(stream: list[Record]) -> bool:
    """Does ``stream`` hold a receipt purchased (and stamped by the broker) past
    :data:`MAX_DATETIME_MS`, which validation lets through and a step then crashes on?"""
    if not AWAITING_LEAD:
        return False
    for topic, _key, value, ts in stream:
        if topic != "pos.receipts" or ts <= MAX_DATETIME_MS:
            continue
        try:
            r = CODEC.decode(topic, value)
        except codec_module.DecodeError:
            continue
        if r is not None and r["purchased_at"] > MAX_DATETIME_MS:
            return True
    return False


# --- the world the domain-biased values live in -------------------------------------------

T0 = 1_793_613_600_000  # 2026-11-02 12:00 Helsinki
CARDS = ("CARD-1", "CARD-2", "CARD-3", "CARD-4")
CUSTOMERS = ("CUST-1", "CUST-2", "CUST-3")
HOUSEHOLDS = ("HH-1", "HH-2")
GTINS = ("6400000000011", "6400000000028", "2000000000015", "7300000000030")
STORES = ("STORE-1", "STORE-2")
PRODUCT_CHAINS = tuple(sorted(RULES.product_level_chains))
OTHER_CHAINS = ("HOTEL", "PARTNER", "RESTAURANT")
PAYMENTS = ("S_ETUKORTTI_PAYMENT", "OTHER_CARD", "CASH", "MOBILE", "GIFT_CARD")


def mixed(plausible: st.SearchStrategy[Any], anything: st.SearchStrategy[Any]) -> Any:
    """Mostly a plausible domain value (so that a record gets past the first rule check and
    the rest of it is exercised), sometimes anything the schema allows."""
    # Not one_of(plausible, ..., anything): hypothesis favours the last branch (integer draws
    # lean to their bounds), and dedupes examples, so a few plausible values would be rare.
    return _mixed(plausible, anything)


@st.composite
def _mixed(draw: st.DrawFn, plausible: Any, anything: Any) -> Any:
    return draw(anything if draw(st.integers(0, 9)) == 4 else plausible)


def near_t0(days: int = 40) -> st.SearchStrategy[int]:
    return st.integers(T0 - days * DAY_MS, T0 + days * DAY_MS)


SMALL_LONGS = st.integers(-100_000, 100_000)

PLAUSIBLE = {
    "fi.coop.purchase.Product": {
        "gtin": mixed(st.sampled_from(GTINS), strings()),
        "product_group": mixed(st.sampled_from(("DAIRY", "FRUIT", "MEAT", "UNKNOWN")), strings()),
        "origin": mixed(
            st.sampled_from(("FINNISH_RAW", "FINNISH_MADE", "FOREIGN", "UNKNOWN")), strings()
        ),
        "net_weight_grams": mixed(st.none() | st.integers(0, 5_000), st.none() | LONGS),
        "co2e_kg_per_kg": mixed(
            st.none() | st.floats(0, 50, allow_nan=False),
            st.none() | st.floats(allow_nan=True, allow_infinity=True),
        ),
    },
    "fi.coop.purchase.Card": {
        "card_number": mixed(st.sampled_from(CARDS), strings()),
        "customer_id": mixed(st.sampled_from(CUSTOMERS), strings()),
        "household_id": mixed(st.sampled_from(HOUSEHOLDS), strings()),
        "role": mixed(st.sampled_from(("MAIN_MEMBER", "MEMBER")), strings()),
    },
    "fi.coop.purchase.Consent": {
        "customer_id": mixed(st.sampled_from(CUSTOMERS), strings()),
        "version": mixed(st.integers(0, 20), LONGS),
        "effective_at": mixed(near_t0(), LONGS),
    },
    "fi.coop.purchase.Receipt": {
        "receipt_id": mixed(st.sampled_from(("R-1", "R-2", "R-3", "R-4", "R-5")), strings()),
        "store_id": mixed(st.sampled_from(STORES), strings()),
        "chain": mixed(st.sampled_from(PRODUCT_CHAINS + OTHER_CHAINS), strings()),
        "card_number": mixed(st.sampled_from((None, *CARDS)), st.none() | strings()),
        "purchased_at": mixed(near_t0(), LONGS),
        "payment_method": mixed(st.sampled_from(PAYMENTS), strings()),
        "original_receipt_id": mixed(st.sampled_from((None, None, "R-1", "R-2")), strings()),
        "total_cents": mixed(SMALL_LONGS, LONGS),
        "bonus_eligible_cents": mixed(SMALL_LONGS, LONGS),
        "lines.gtin": mixed(st.sampled_from(GTINS), strings()),
        "lines.unit": mixed(st.sampled_from(("PCS", "KG")), strings()),
        "lines.quantity_milli": mixed(st.integers(-10_000, 10_000), LONGS),
        "lines.amount_cents": mixed(st.integers(-10_000, 10_000), LONGS),
        "lines.line_no": mixed(st.integers(1, 10), st.integers(-(1 << 31), (1 << 31) - 1)),
    },
}


@cache
def _plausible_receipts(huge: int) -> st.SearchStrategy[dict[str, Any]]:
    # Built once: a strategy tree made per draw is validated per draw (most of the run time).
    return for_record(
        "fi.coop.purchase.Receipt", PLAUSIBLE["fi.coop.purchase.Receipt"], huge_arrays=huge
    )


@st.composite
def receipts(draw: st.DrawFn, huge: int = 1_000) -> dict[str, Any]:
    """A schema-valid receipt, usually made to agree with itself (unique line numbers, one
    sign throughout -- a sale, or a return naming its original -- and totals that are the
    sums of the lines) so that it reaches the stages behind validation."""
    r = draw(_plausible_receipts(huge))
    mode = draw(st.sampled_from(("as drawn", "sale", "sale", "sale", "return")))
    if mode == "as drawn":
        return r
    sign = -1 if mode == "return" else 1
    r["lines"] = [
        {
            **x,
            "line_no": i + 1,
            "amount_cents": sign * min(abs(x["amount_cents"]), LONG_MAX),
            "quantity_milli": sign * min(abs(x["quantity_milli"]), LONG_MAX),
        }
        for i, x in enumerate(r["lines"])
    ]
    if sign < 0 and r["original_receipt_id"] is None:
        r["original_receipt_id"] = "R-1"
    total = sum(x["amount_cents"] for x in r["lines"])
    eligible = sum(x["amount_cents"] for x in r["lines"] if x["bonus_eligible"])
    if LONG_MIN <= total <= LONG_MAX and LONG_MIN <= eligible <= LONG_MAX:
        r["total_cents"], r["bonus_eligible_cents"] = total, eligible
    return r


@cache
def values(topic: str) -> st.SearchStrategy[dict[str, Any]]:
    """Schema-valid values of an input topic, biased towards the domain."""
    name = TOPIC_SCHEMA[topic]
    assert name is not None
    if topic == "pos.receipts":
        return mixed(receipts(), for_record(name, huge_arrays=300))
    return mixed(for_record(name, PLAUSIBLE[name]), for_record(name))


ANY_KEY = st.none() | strings()


@st.composite
def keyed(draw: st.DrawFn, topic: str) -> tuple[str | None, dict[str, Any] | None]:
    """(key, value) for a topic: usually keyed as the topic is (by the record's id), with
    tombstones, missing keys and wrong keys now and then."""
    value = draw(values(topic))
    key = value[KEY_FIELD[topic]]
    if topic == "pos.receipts" and key is None:
        key = value["store_id"]  # anonymous receipts are keyed by store
    choice = draw(st.integers(0, 9))
    if choice == 0:
        key = draw(ANY_KEY)
    elif choice == 1 and topic != "pos.receipts":
        return key, None  # a tombstone (closed card, erased customer, deleted product)
    return key, value


# --- running a stream -----------------------------------------------------------------------

Record = tuple[str, bytes | None, bytes | None, int]


@dataclass
class Run:
    outputs: list[Outgoing] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    states: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    # what the run's metrics say: records out per topic, dead letters per (stage, reason)
    metric_out: Counter[str] = field(default_factory=Counter)
    metric_dead: Counter[tuple[str, str]] = field(default_factory=Counter)


def replay(stream: list[Record], state_dir: Path | None = None) -> Run:
    """Feed ``stream`` to a fresh driver that holds the state :data:`PRELUDE` leaves; the
    outputs, decoded dead letters, final state and metrics of ``stream`` alone."""
    run = Run()
    driver = Driver(RULES, state_dir=state_dir, codec=CODEC)
    driver.sink = run.outputs.append
    try:
        # A copy of the prelude's state rather than the prelude itself: feeding its records
        # again for every example was most of the time of the single-record properties.
        for name, items in prelude_states().items():
            for key, value in items:
                driver.states[name].set(key, copy.deepcopy(value))
        for i, (topic, key, value, ts) in enumerate(stream):
            try:
                driver.feed(topic, key, value, ts)
            except Exception as exc:
                raise AssertionError(
                    f"Driver.feed raised on record {i} ({topic}): {exc!r}"
                ) from exc
        for out in run.outputs:
            if out.topic == DLQ_TOPIC:
                run.dead_letters.append(CODEC.decode(DLQ_TOPIC, out.value) or {})
        run.states = {name: list(state.items("")) for name, state in driver.states.items()}
        for family in driver.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == "purchase_stream_records_out_total" and sample.value:
                    run.metric_out[sample.labels["topic"]] += int(sample.value)
                elif sample.name == "purchase_stream_dead_letters_total" and sample.value:
                    key = (sample.labels["stage"], sample.labels["reason"])
                    run.metric_dead[key] += int(sample.value)
    finally:
        driver.close()
    return run


def check_dead_letters(run: Run, stream: list[Record]) -> None:
    """Properties 1 and 2: bounded reasons, no catch-all, original bytes, at most once each."""
    by_position: dict[tuple[str, int], Record] = {}
    offsets: Counter[str] = Counter()
    for rec in stream:
        by_position[(rec[0], offsets[rec[0]])] = rec
        offsets[rec[0]] += 1
    seen: Counter[tuple[str, int]] = Counter()
    for dl in run.dead_letters:
        if currently_in_test_context():
            note(f"dead letter: {dl['stage']} {dl['topic']}@{dl['offset']} {dl['reason']}")
        assert dl["reason"] != "processing_error", f"a step raised: {dl['error']}"
        assert dl["reason"] in REASON_CODES, f"undeclared reason code {dl['reason']!r}"
        if dl["topic"] in INPUT_TOPICS:
            pos = (dl["topic"], dl["offset"])
            assert pos in by_position, f"dead letter for a record never fed: {pos}"
            _topic, key, value, _ts = by_position[pos]
            if (dl["key"], dl["value"]) != (key, value):
                # Only an input too big to be copied into a dead letter keeps only its place.
                assert dl["key"] is None and dl["value"] is None, "dead letter changed the bytes"
                size = len(key or b"") + len(value or b"")
                assert AWAITING_LEAD or size > DLQ_LIMIT // 2, "dead letter lost the bytes"
            seen[pos] += 1
    twice = [pos for pos, n in seen.items() if n > 1]
    assert not twice, f"records dead-lettered more than once: {twice}"


def check_metrics(run: Run) -> None:
    """The metrics agree with what was written, dead letters included (issue 16, item 5)."""
    assert run.metric_dead == Counter((d["stage"], d["reason"]) for d in run.dead_letters)
    written = Counter(o.topic for o in run.outputs)
    external = {t: n for t, n in run.metric_out.items() if not TOPICS[t].internal}
    assert external == dict(written), "records_out_total disagrees with the records written"


def feed_and_check(stream: list[Record]) -> Run:
    run = replay(stream)
    check_dead_letters(run, stream)
    check_metrics(run)
    return run


def encoded(topic: str, key: str | None, value: dict[str, Any] | None, ts: int) -> Record:
    return topic, CODEC.encode_key(key), CODEC.encode(topic, value), ts


# A valid little world every single-record example starts from, so that a fuzzed receipt
# meets known cards, consents (all on) and products instead of being parked.
def _prelude() -> list[Record]:
    out: list[Record] = []
    for i, gtin in enumerate(GTINS):
        out.append(
            encoded(
                "product.catalog",
                gtin,
                {
                    "gtin": gtin,
                    "name": f"p{i}",
                    "product_group": ("DAIRY", "FRUIT")[i % 2],
                    "food": i != 3,
                    "vegetable": i == 2,
                    "origin": "FINNISH_RAW",
                    "net_weight_grams": 500 if i == 0 else None,
                    "co2e_kg_per_kg": 1.5,
                },
                T0,
            )
        )
    for i, card in enumerate(CARDS):
        cid = CUSTOMERS[i % len(CUSTOMERS)]
        out.append(
            encoded(
                "customer.cards",
                card,
                {
                    "card_number": card,
                    "customer_id": cid,
                    "household_id": HOUSEHOLDS[i % 2],
                    "role": "MAIN_MEMBER" if i < 2 else "MEMBER",
                },
                T0,
            )
        )
    for cid in CUSTOMERS:
        out.append(
            encoded(
                "customer.consents",
                cid,
                {
                    "customer_id": cid,
                    "version": 1,
                    "effective_at": 0,
                    "source": "APP",
                    **dict.fromkeys(FLAGS, True),
                },
                T0,
            )
        )
    return out


PRELUDE = _prelude()


@cache
def prelude_states() -> dict[str, list[tuple[str, Any]]]:
    driver = Driver(RULES, codec=CODEC)
    for rec in PRELUDE:
        driver.feed(*rec)
    assert driver.summary.records_out.get(DLQ_TOPIC, 0) == 0, "the prelude must be valid"
    return {name: list(state.items("")) for name, state in driver.states.items()}


BROKER_TS = st.one_of(
    near_t0(5).filter(lambda t: t >= T0), st.sampled_from([-1, 0, T0, LONG_MAX, LONG_MIN])
)
MINUTE_MS = 60_000


@st.composite
def receipt_ts(draw: st.DrawFn, receipt: dict[str, Any] | None) -> int:
    """The broker timestamp of a receipt: mostly minutes to days after its purchase (as a
    till uploads it), so that it passes the implausible_time check and reaches the rest;
    sometimes any timestamp at all."""
    if receipt is None or draw(st.integers(0, 9)) == 0:
        return draw(BROKER_TS)
    delay = draw(st.integers(-10 * MINUTE_MS, 3 * DAY_MS))
    return max(LONG_MIN, min(LONG_MAX, receipt["purchased_at"] + delay))


# --- 1. raw bytes -----------------------------------------------------------------------------


@pytest.mark.parametrize("topic", INPUT_TOPICS)
@given(data=st.data())
def test_random_bytes_are_dead_lettered_never_raised(topic: str, data: st.DataObject) -> None:
    key = data.draw(st.none() | st.binary(max_size=32), label="key")
    value = data.draw(
        st.one_of(
            st.none(),
            st.binary(max_size=200),
            # random bytes behind a valid magic byte and a real schema id: the body decoders
            st.builds(
                lambda sid, body: b"\x00" + sid.to_bytes(4, "big") + body,
                st.sampled_from(SCHEMA_IDS),
                st.binary(max_size=200),
            ),
        ),
        label="value",
    )
    ts = data.draw(BROKER_TS, label="timestamp")
    stream = [(topic, key, value, ts)]
    assume(not awaiting_lead(stream))
    run = feed_and_check(stream)
    if value is not None and (len(value) < 5 or value[0] != 0):
        # not Confluent wire format: dead-lettered, nothing else comes out of it
        assert [dl["reason"] for dl in run.dead_letters] == ["undecodable"]


def _previous_receipt_frame(value: dict[str, Any]) -> bytes:
    import io

    body = io.BytesIO()
    old = {k: v for k, v in value.items() if k != "original_receipt_id"}
    schemaless_writer(body, _PREVIOUS_RECEIPT, old)
    return b"\x00" + PREVIOUS_RECEIPT_ID.to_bytes(4, "big") + body.getvalue()


@st.composite
def mutated_frames(draw: st.DrawFn, topic: str) -> bytes:
    """A valid Confluent frame of a schema-valid value of ``topic``, then broken."""
    value = draw(values(topic))
    if topic == "pos.receipts" and draw(st.booleans()):
        frame = bytearray(_previous_receipt_frame(value))
    else:
        frame = bytearray(CODEC.encode(topic, value) or b"")
    mutation = draw(
        st.sampled_from(("magic", "schema_id", "truncate", "append", "flip", "splice", "none"))
    )
    if mutation == "magic":
        frame[0] = draw(st.integers(1, 255))
    elif mutation == "schema_id":
        sid = draw(st.one_of(st.sampled_from(SCHEMA_IDS), st.integers(0, (1 << 32) - 1)))
        frame[1:5] = sid.to_bytes(4, "big")
    elif mutation == "truncate":
        del frame[draw(st.integers(0, len(frame) - 1)) :]
    elif mutation == "append":
        frame += draw(st.binary(min_size=1, max_size=16))
    elif mutation == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(5, len(frame) - 1)) if len(frame) > 5 else 0
            frame[i] ^= draw(st.integers(1, 255))
    elif mutation == "splice":
        i = draw(st.integers(5, len(frame)))
        j = draw(st.integers(i, min(len(frame), i + 16)))
        frame[i:j] = draw(st.binary(max_size=16))
    return bytes(frame)


@pytest.mark.parametrize("topic", INPUT_TOPICS)
@given(data=st.data())
def test_mutated_avro_frames_are_dead_lettered_never_raised(
    topic: str, data: st.DataObject
) -> None:
    frame = data.draw(mutated_frames(topic), label="frame")
    key = data.draw(st.none() | st.sampled_from(CARDS + CUSTOMERS + GTINS) | strings(), label="key")
    ts = data.draw(BROKER_TS, label="timestamp")
    stream = [(topic, CODEC.encode_key(key), frame, ts)]
    assume(not awaiting_lead(stream))
    feed_and_check(stream)


# --- 2. schema-valid values -----------------------------------------------------------------


@pytest.mark.parametrize("topic", INPUT_TOPICS)
@given(data=st.data())
def test_schema_valid_values_are_processed_or_dead_lettered(
    topic: str, data: st.DataObject
) -> None:
    # Two records of the topic, so that a fuzzed catalogue entry, card or consent is then
    # used by a receipt, and a fuzzed receipt meets a second one (duplicates, returns).
    stream: list[Record] = []
    for i in range(2):
        key, value = data.draw(keyed(topic), label=f"record {i}")
        ts = data.draw(receipt_ts(value) if topic == "pos.receipts" else BROKER_TS, label="ts")
        stream.append(encoded(topic, key, value, ts))
    if topic != "pos.receipts":
        for i in range(2):
            r = data.draw(receipts(huge=0), label=f"receipt {i}")
            key = r["card_number"] if r["card_number"] is not None else r["store_id"]
            stream.append(encoded("pos.receipts", key, r, data.draw(receipt_ts(r), label="ts")))
    assume(not awaiting_lead(stream))
    feed_and_check(stream)


# --- 3. the same stream twice ---------------------------------------------------------------


@st.composite
def records(draw: st.DrawFn) -> Record:
    """One record of any input topic: schema-valid (mostly plausible) or raw garbage."""
    topic = draw(st.sampled_from(INPUT_TOPICS))
    if draw(st.integers(0, 9)) == 0:
        garbage = draw(st.binary(max_size=64))
        return topic, draw(st.none() | st.binary(max_size=16)), garbage, draw(BROKER_TS)
    if topic == "pos.receipts":
        r = draw(receipts(huge=200))
        key = r["card_number"] if r["card_number"] is not None else r["store_id"]
        return encoded(topic, key, r, draw(receipt_ts(r)))
    key, value = draw(keyed(topic))
    return encoded(topic, key, value, draw(BROKER_TS))


def _plain(state: list[tuple[str, Any]]) -> str:
    """State as text that tells NaN from null and ints from floats (what JSON state keeps)."""
    return repr(json.loads(json.dumps(state)))


def _fingerprint(run: Run) -> tuple[list[Outgoing], dict[str, str]]:
    return run.outputs, {name: _plain(items) for name, items in run.states.items()}


@given(stream=st.lists(records(), min_size=1, max_size=8))
def test_same_stream_twice_same_state_and_outputs(stream: list[Record]) -> None:
    assume(not awaiting_lead(stream))
    first = feed_and_check(stream)
    second = replay(stream)
    assert _fingerprint(second) == _fingerprint(first)


@settings(max_examples=max(10, settings().max_examples // 10))  # a RocksDB per stage per run
@given(stream=st.lists(records(), min_size=1, max_size=8))
def test_rocksdb_state_equals_memory_state(stream: list[Record]) -> None:
    # replay and the worker keep state as JSON in RocksDB, the unit tests in memory: a value
    # JSON cannot hold (NaN, an int past 64 bits) would make the two disagree, or crash
    # only in production.
    import tempfile

    assume(not awaiting_lead(stream))
    in_memory = feed_and_check(stream)
    with tempfile.TemporaryDirectory(prefix="fuzz-state-") as tmp:
        on_disk = replay(stream, state_dir=Path(tmp))
    assert _fingerprint(on_disk) == _fingerprint(in_memory)


# --- 4. consent in mixed valid streams --------------------------------------------------------

GATED_TOPICS = {
    "personal.line_items": PRODUCT_LEVEL_SERVICES,
    "marketing.signals": MARKETING_TARGETING,
    "ereceipts.archive": E_RECEIPTS,
}
GATED_PREFIXES = {"pl": PRODUCT_LEVEL_SERVICES, "ms": MARKETING_TARGETING, "er": E_RECEIPTS}


class ConsentOracle:
    """docs/domain.md §2-3, read directly: a change with a version not above the highest accepted
    for the person is ignored; an erasure forgets the person (not their versions); a line
    item purchased at ``t`` may be in a flag's store iff the flag is on in the record in
    effect at ``t`` (the highest accepted version effective by ``t``) and in every accepted
    record after it. The processor may be stricter (it is, for backdated reopenings and
    purchases made before an erasure), never more lenient."""

    def __init__(self) -> None:
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.top: dict[str, int] = {}

    def apply(self, cid: str, value: dict[str, Any] | None) -> None:
        if value is None:
            self.history[cid] = []
            return
        if cid in self.top and value["version"] <= self.top[cid]:
            return
        self.top[cid] = value["version"]
        self.history.setdefault(cid, []).append(value)

    def allows(self, cid: str, flag: str, purchased_at: int) -> bool:
        history = self.history.get(cid, [])
        in_effect = [r for r in history if r["effective_at"] <= purchased_at]
        if not in_effect:
            return False
        first = max(in_effect, key=lambda r: r["version"])
        return all(r[flag] for r in history if r["version"] >= first["version"])


# Few people and cards, flags mostly on, effective times mostly before the purchases: so
# that receipts often meet a consent that lets them in, and later changes that close it.
FEW_CARDS, FEW_CUSTOMERS = CARDS[:3], CUSTOMERS[:2]
VALID_CARD = st.fixed_dictionaries(
    {
        "card_number": st.sampled_from(FEW_CARDS),
        "customer_id": st.sampled_from(FEW_CUSTOMERS),
        "household_id": st.sampled_from(HOUSEHOLDS),
        "role": st.sampled_from(("MAIN_MEMBER", "MEMBER")),
    }
)
VALID_CONSENT = st.fixed_dictionaries(
    {
        "customer_id": st.sampled_from(FEW_CUSTOMERS),
        "version": st.integers(0, 12),
        "effective_at": st.integers(T0 - 30 * DAY_MS, T0 + 10 * DAY_MS),
        "source": st.just("APP"),
        **{flag: st.sampled_from((True, True, False)) for flag in FLAGS},
    }
)
VALID_PRODUCT = st.fixed_dictionaries(
    {
        "gtin": st.sampled_from(GTINS),
        "name": st.just("product"),
        "product_group": st.sampled_from(("DAIRY", "FRUIT")),
        "food": st.booleans(),
        "vegetable": st.booleans(),
        "origin": st.sampled_from(("FINNISH_RAW", "FINNISH_MADE", "FOREIGN", "UNKNOWN")),
        "net_weight_grams": st.none() | st.integers(1, 2_000),
        "co2e_kg_per_kg": st.none() | st.floats(0, 30),
    }
)


@st.composite
def valid_receipt(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 4))
    sign = draw(st.sampled_from((1, 1, 1, -1)))
    lines = [
        {
            "line_no": i + 1,
            "gtin": draw(st.sampled_from(GTINS)),
            "unit": draw(st.sampled_from(("PCS", "KG"))),
            "quantity_milli": sign * draw(st.integers(1, 5_000)),
            "amount_cents": sign * draw(st.integers(0, 5_000)),
            "bonus_eligible": draw(st.booleans()),
        }
        for i in range(n)
    ]
    return {
        "receipt_id": draw(st.sampled_from([f"R-{i}" for i in range(1, 9)])),
        "store_id": draw(st.sampled_from(STORES)),
        "chain": draw(st.sampled_from(("PRISMA", "S_MARKET", "ALEPA", "HOTEL"))),
        "card_number": draw(st.sampled_from((*FEW_CARDS, *FEW_CARDS, None))),
        "purchased_at": draw(near_t0(20)),
        "total_cents": sum(x["amount_cents"] for x in lines),
        "bonus_eligible_cents": sum(x["amount_cents"] for x in lines if x["bonus_eligible"]),
        "payment_method": draw(st.sampled_from(PAYMENTS)),
        "original_receipt_id": "R-1" if sign < 0 else None,
        "lines": lines,
    }


@st.composite
def valid_event(draw: st.DrawFn) -> tuple[str, str | None, dict[str, Any] | None]:
    kind = draw(
        st.sampled_from(
            (
                "card",
                "card",
                "consent",
                "consent",
                "consent",
                "product",
                "receipt",
                "receipt",
                "receipt",
                "receipt",
                "card_closed",
                "erasure",
            )
        )
    )
    if kind == "card":
        c = draw(VALID_CARD)
        return "customer.cards", c["card_number"], c
    if kind == "card_closed":
        return "customer.cards", draw(st.sampled_from(FEW_CARDS)), None
    if kind == "consent":
        c = draw(VALID_CONSENT)
        return "customer.consents", c["customer_id"], c
    if kind == "erasure":
        return "customer.consents", draw(st.sampled_from(FEW_CUSTOMERS)), None
    if kind == "product":
        p = draw(VALID_PRODUCT)
        return "product.catalog", p["gtin"], p
    r = draw(valid_receipt())
    return "pos.receipts", r["card_number"] or r["store_id"], r


def _gated(topic: str, value: dict[str, Any]) -> tuple[str, int]:
    """(purchaser, purchase time) of a record on a consent-gated topic or in its store."""
    if "receipt" in value and isinstance(value["receipt"], dict):  # an e-receipt
        return value["customer_id"], value["receipt"]["purchased_at"]
    return value["customer_id"], value["purchased_at"]


@given(
    events=st.lists(
        valid_event().flatmap(
            lambda e: st.tuples(
                st.just(e),
                st.integers(0, 2 * DAY_MS).map(lambda d, e=e: e[2]["purchased_at"] + d)
                if e[0] == "pos.receipts"
                else near_t0(20),
            )
        ),
        min_size=8,
        max_size=30,
    ),
)
def test_nothing_reaches_a_consent_gated_store_without_consent(
    events: list[tuple[tuple[str, str | None, dict[str, Any] | None], int]],
) -> None:
    oracle = ConsentOracle()
    driver = Driver(RULES, codec=CODEC)
    outputs: list[Outgoing] = []
    driver.sink = outputs.append
    compacted: dict[tuple[str, bytes | None], dict[str, Any] | None] = {}
    for (topic, key, value), ts in events:
        if topic == "customer.consents":
            assert key is not None
            oracle.apply(key, value)
        seen = len(outputs)
        driver.feed(topic, CODEC.encode_key(key), CODEC.encode(topic, value), ts)
        for out in outputs[seen:]:
            assert (
                out.topic != DLQ_TOPIC
                or (CODEC.decode(DLQ_TOPIC, out.value) or {})["reason"] != "processing_error"
            )
            if out.topic not in GATED_TOPICS:
                continue
            decoded = CODEC.decode(out.topic, out.value)
            compacted[(out.topic, out.key)] = decoded
            if decoded is None:
                continue  # a deletion
            cid, t = _gated(out.topic, decoded)
            assert oracle.allows(cid, GATED_TOPICS[out.topic], t), (
                f"{out.topic} record sent without {GATED_TOPICS[out.topic]} "
                f"on since its purchase time"
            )
    # What is left at the end (the compacted topics and the stage's stores) is still
    # consented now: a revocation removed what it closed.
    for (topic, _key), value in compacted.items():
        if value is not None:
            cid, t = _gated(topic, value)
            assert oracle.allows(cid, GATED_TOPICS[topic], t), f"{topic} keeps a revoked item"
    routing = driver.states["personal_routing"]
    for prefix, flag in GATED_PREFIXES.items():
        for skey, value in routing.items(f"{prefix}|"):
            cid, t = _gated(prefix, value)
            assert oracle.allows(cid, flag, t), f"store {prefix} keeps {skey.split('|')[0]}"
    # S-mobiili counters are made of product-level line items: none without one.
    months_with_items = {
        (v["customer_id"], RULES.local_month(v["purchased_at"])) for _, v in routing.items("pl|")
    }
    for skey, _ in routing.items("cn|"):
        _, cid, month = skey.split("|")
        assert (cid, month) in months_with_items, "counters without product-level consent"
    driver.close()


# --- regression tests: what the fuzzer found ---------------------------------------------------


def _receipt(**over: Any) -> dict[str, Any]:
    """A valid receipt of CARD-1 (CUST-1, every flag on in the prelude) at a product chain."""
    lines = (
        over.pop("lines")
        if "lines" in over
        else [
            {
                "line_no": 1,
                "gtin": GTINS[0],
                "unit": "PCS",
                "quantity_milli": 2000,
                "amount_cents": 300,
                "bonus_eligible": True,
            }
        ]
    )
    r = {
        "receipt_id": "R-9",
        "store_id": "STORE-1",
        "chain": "PRISMA",
        "card_number": "CARD-1",
        "purchased_at": T0,
        "total_cents": sum(x["amount_cents"] for x in lines),
        "bonus_eligible_cents": sum(x["amount_cents"] for x in lines if x["bonus_eligible"]),
        "payment_method": "CASH",
        "original_receipt_id": None,
        "lines": lines,
    }
    return r | over


@pytest.mark.parametrize(
    ("factor", "weight", "reason"),
    [
        (float("nan"), 500, "bad_co2e_factor"),  # counters: int(Decimal('NaN')) ValueError
        (float("inf"), 500, "bad_co2e_factor"),  # counters: quantize(Infinity) InvalidOperation
        (1e300, 500, "bad_co2e_factor"),  # counters: quantize past the context's precision
        (-5.0, 500, "bad_co2e_factor"),
        (1.5, 1 << 62, "bad_net_weight"),  # co2e_grams past an Avro long: Driver.feed raised
        (1.5, -1, "bad_net_weight"),
    ],
)
def test_catalogue_entry_with_implausible_numbers_is_dead_lettered(
    factor: float, weight: int, reason: str
) -> None:
    # Before the fix the entry was stored, and the next consented receipt of the product
    # died in the counters step (processing_error) or raised out of Driver.feed.
    bad = {
        "gtin": GTINS[0],
        "name": "p",
        "product_group": "DAIRY",
        "food": True,
        "vegetable": False,
        "origin": "FOREIGN",
        "net_weight_grams": weight,
        "co2e_kg_per_kg": factor,
    }
    run = feed_and_check(
        [
            encoded("product.catalog", GTINS[0], bad, T0),
            encoded("pos.receipts", "CARD-1", _receipt(), T0),
        ]
    )
    assert [(d["stage"], d["reason"]) for d in run.dead_letters] == [("catalog", reason)]
    # The entry held before stays, and the receipt is counted with it (500 g a piece, 1.5).
    counters = [
        CODEC.decode(o.topic, o.value) for o in run.outputs if o.topic == "smobiili.counters"
    ]
    assert [(c["food_grams"], c["co2e_grams"]) for c in counters if c] == [(1000, 1500)]


def test_nan_in_a_catalogue_entry_no_longer_splits_rocksdb_from_memory_state() -> None:
    # RocksDB state is JSON (orjson writes NaN as null): memory and disk disagreed.
    bad = dict(CODEC.decode("product.catalog", PRELUDE[0][2]) or {}, co2e_kg_per_kg=float("nan"))
    stream = [encoded("product.catalog", GTINS[0], bad, T0)]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fuzz-state-") as tmp:
        assert _fingerprint(replay(stream, Path(tmp))) == _fingerprint(replay(stream))


FAR_FUTURE = [
    253_402_214_400_000,  # 9999-12-31T00:00Z: household_bonus.close_at(9999-12) raised
    253_402_300_800_000,  # 10000-01-01T00:00Z: card_join's Rules.local_date raised
    LONG_MAX,
]


@pytest.mark.parametrize("purchased_at", FAR_FUTURE)
def test_receipt_purchased_after_year_9999_is_dead_lettered_as_implausible_time(
    purchased_at: int,
) -> None:
    # Found before the limits at the door: validation only checked purchased_at > 0, and a
    # later step raised ValueError (year out of range), a processing_error.
    run = feed_and_check(
        [encoded("pos.receipts", "CARD-1", _receipt(purchased_at=purchased_at), T0)]
    )
    assert [d["reason"] for d in run.dead_letters] == ["implausible_time"]
    assert len(run.outputs) == 1  # the dead letter, nothing else


@pytest.mark.parametrize("purchased_at", FAR_FUTURE)
def test_receipt_and_broker_time_after_year_9999_is_dead_lettered(purchased_at: int) -> None:
    # implausible_time bounds purchased_at by the broker timestamp, and a producer sets that
    # (CreateTime): with both past 9999-11 the receipt passes and a step raises ValueError
    # (processing_error). Expected: dead-lettered at the door, nothing else sent.
    run = feed_and_check(
        [encoded("pos.receipts", "CARD-1", _receipt(purchased_at=purchased_at), purchased_at)]
    )
    assert [(d["stage"], d["reason"]) for d in run.dead_letters] == [
        ("card_join", "implausible_time")
    ]
    assert len(run.outputs) == 1


def _lines(*pairs: tuple[int, int]) -> list[dict[str, Any]]:
    return [
        {
            "line_no": i + 1,
            "gtin": GTINS[0],
            "unit": "PCS",
            "quantity_milli": q,
            "amount_cents": a,
            "bonus_eligible": False,
        }
        for i, (q, a) in enumerate(pairs)
    ]


@pytest.mark.parametrize(
    "receipts_",
    [
        # One receipt: two lines whose quantities sum past an Avro long in the product
        # group's aggregate (aggregates.group cannot be encoded: Driver.feed raised). Since
        # the runner's output_invalid, the stages behind the door dead-letter it one by one
        # (group_aggregates; personal_routing, whose counters overflow too).
        [_receipt(lines=_lines((1, 0), (LONG_MAX, 0)))],
        # Two total-only receipts of the same store and day at LONG_MAX each: the day's total
        # (aggregates.group) and the household's eligible sum (household.bonus) overflow;
        # the first one's Bonus of 4.6e16 euros is counted.
        [
            _receipt(
                receipt_id=rid,
                chain="HOTEL",
                lines=[],
                total_cents=LONG_MAX,
                bonus_eligible_cents=LONG_MAX,
            )
            for rid in ("R-8", "R-9")
        ],
    ],
    ids=["quantities", "totals"],
)
def test_amounts_that_overflow_a_sum_are_dead_lettered_at_the_door(
    receipts_: list[dict[str, Any]],
) -> None:
    # No bound on a line's amount or quantity, nor on a receipt's total: each fits a long,
    # their sums do not. Expected: card_join dead-letters the receipt (a reason of the
    # lead's choosing) before anything is emitted for it.
    stream = [*(encoded("pos.receipts", "CARD-1", r, T0) for r in receipts_)]
    run = feed_and_check(stream)
    assert run.dead_letters and all(d["stage"] == "card_join" for d in run.dead_letters)
    assert not [o for o in run.outputs if o.topic != DLQ_TOPIC]


def test_records_out_counts_the_dead_letter_of_an_undecodable_record() -> None:
    # Found by check_metrics: Runner.process returned the dead letter of a DecodeError before
    # the loop that counts records_out_total, which read 0 for 1 written (issue 16, item 5;
    # fixed in stream/engine/runner.py by the lead).
    run = replay([(topic, None, b"", T0) for topic in INPUT_TOPICS])
    assert len(run.dead_letters) == 4
    assert run.metric_out["deadletters"] == 4


def test_dead_letter_of_a_small_record_keeps_its_bytes_and_a_bounded_error() -> None:
    # Reject details echo the input (validation's "unit {unit!r}", "payment_method {...!r}"),
    # and repr() writes an astral character as 10 characters: an 80 KB receipt got a 200 KB
    # error text, and one of ~400 KB (well under the broker's limit) a dead letter over the
    # limit, which the runner then sends without the original bytes.
    r = _receipt()
    r["lines"][0]["unit"] = "\U0002f4a1" * 100_000  # 400 KB of UTF-8
    rec = encoded("pos.receipts", "CARD-1", r, T0)
    run = replay([rec])
    [dl] = run.dead_letters
    assert dl["reason"] == "bad_unit"
    assert len(dl["error"]) <= 2_000
    assert (dl["key"], dl["value"]) == (rec[1], rec[2])
