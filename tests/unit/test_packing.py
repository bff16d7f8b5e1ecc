"""Packed internal records (stream/engine/packing.py): what a batch sends to one partition of
aggregates.contributions goes as one record, and the group-aggregate stage counts each element
as if it had come alone."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable

import orjson
import pytest

from stream.engine.packing import Packer, sends
from stream.engine.partitioning import key_bytes_partition
from stream.engine.runner import Outgoing, RawRecord
from stream.serde.codec import DecodeError
from tests.unit.test_crash_prefix import INPUTS, RUNNER
from tests.unit.topo_helpers import ChangelogState, cut_and_restore
from topologies.pipeline import STAGE_BY_NAME
from topologies.state import MemoryState

TOPIC = "aggregates.contributions"
GROUP = STAGE_BY_NAME["group_aggregates"]
CARD_JOIN = STAGE_BY_NAME["card_join"]


def _limit(topic: str) -> int:
    return 1_000


def _partition(topic: str, key: bytes) -> int:
    return key_bytes_partition(key, 4)


def _out(key: bytes | None, value: bytes | None, topic: str = TOPIC) -> Outgoing:
    return Outgoing(topic, key, value)


def _keys(partition: int, n: int) -> list[bytes]:
    """``n`` store keys that go to ``partition`` of 4."""
    found = [
        f"S{i}".encode()
        for i in range(1000)
        if key_bytes_partition(f"S{i}".encode(), 4) == partition
    ]
    return found[:n]


def test_a_batch_packs_per_partition_and_keeps_the_latest_timestamp() -> None:
    (a, b), (c,) = _keys(0, 2), _keys(1, 1)
    p = Packer(_limit, _partition)
    assert p.add(_out(a, b'{"a":1}'), 10) == []
    assert p.add(_out(c, b'{"c":2}'), 12) == []
    assert p.add(_out(b, b'{"b":3}'), 11) == []
    assert len(p) == 3
    packs = p.drain()
    assert [(o.key, orjson.loads(o.value or b""), ts) for o, ts in packs] == [
        (a, [[a.decode(), {"a": 1}], [b.decode(), {"b": 3}]], 11),  # keyed by its first
        (c, {"c": 2}, 12),  # a pack of one is the plain record
    ]
    assert p.drain() == [] and len(p) == 0


def test_tombstones_keyless_records_and_other_topics_are_never_held() -> None:
    p = Packer(_limit, _partition)
    tomb = _out(b"S1", None)
    keyless = _out(None, b"{}")
    other = _out(b"C1", b"{}", topic="register.people")
    assert p.add(tomb, 5) == [(tomb, 5)]
    assert p.add(keyless, 5) == [(keyless, 5)]
    assert p.add(other, 6) == [(other, 6)]
    assert p.drain() == []
    # pack_internal_topics off: a packer of no topics holds nothing.
    off = Packer(_limit, _partition, frozenset())
    plain = _out(b"S1", b"{}")
    assert off.add(plain, 7) == [(plain, 7)] and off.drain() == []


def test_a_pack_never_exceeds_the_record_limit() -> None:
    p = Packer(lambda _t: 100, _partition)
    value = b'{"x":"' + b"y" * 20 + b'"}'  # 28 bytes; an element with its key ~37
    keys = _keys(2, 7)
    sent = [s for k in keys for s in p.add(_out(k, value), 1)]
    sent += p.drain()
    elements = 0
    for o, _ in sent:
        assert len(o.key or b"") + len(o.value or b"") <= 100
        decoded = orjson.loads(o.value or b"")
        elements += len(decoded) if isinstance(decoded, list) else 1
    assert elements == 7
    assert len(sent) == 4  # two per pack: 2 + 2 + 2 + 1


def test_every_element_of_a_pack_goes_where_its_own_key_would() -> None:
    """The producer routes a pack by its record key (its first element's): every element's
    key must map to the same partition, or a store's state would be on another worker."""
    p = Packer(lambda _t: 100_000, _partition)
    for i in range(400):
        p.add(_out(f"STORE-{i:03d}".encode(), b"{}"), i)
    packs = p.drain()
    assert len(packs) == 4
    for o, _ in packs:
        home = key_bytes_partition(o.key or b"", 4)
        keys = [k for k, _v in orjson.loads(o.value or b"")]
        assert {key_bytes_partition(k.encode(), 4) for k in keys} == {home}


def test_only_inputs_that_regenerate_their_outputs_pack() -> None:
    """A card record releases parked receipts and deletes their parking entries: what it
    sends cannot be regenerated, so it goes at once; a receipt's identified record and
    contribution may wait. The card register's propagations are never packed."""
    assert CARD_JOIN.packs_from == frozenset({"pos.receipts"})
    assert all(not s.packs_from for s in STAGE_BY_NAME.values() if s is not CARD_JOIN)
    contribution = _out(b"S1", b"{}")
    identified = _out(b"C1", b"{}", topic="receipts.identified")
    people = _out(b"C1", b"{}", topic="register.people")
    p = Packer(_limit, _partition)
    card = RawRecord("customer.cards", 0, 7, 100, b"card", b"x")
    assert sends(p, CARD_JOIN, card, [contribution, identified, people]) == [
        (contribution, 100),
        (identified, 100),
        (people, 100),
    ]
    receipt = RawRecord("pos.receipts", 0, 8, 200, b"card", b"x")
    assert sends(p, CARD_JOIN, receipt, [contribution, identified, people]) == [(people, 200)]
    assert sorted(p.drain(), key=lambda s: s[0].topic) == [
        (contribution, 200),
        (identified, 200),
    ]


def test_decode_pack_reads_a_pack_a_plain_record_and_refuses_the_rest() -> None:
    codec = RUNNER.codec
    assert codec.decode_pack(TOPIC, b'[["S1",{"a":1}],["S2",{"a":2}]]', "S1") == [
        ("S1", {"a": 1}),
        ("S2", {"a": 2}),
    ]
    assert codec.decode_pack(TOPIC, b'{"a":1}', "S9") == [("S9", {"a": 1})]
    assert codec.decode_pack(TOPIC, None, "S9") == [("S9", None)]
    for bad in (b"[]", b"[1,2]", b'[["S1",{"a":1}],null]', b'[{"a":1}]', b'[["S1"]]', b"[{"):
        with pytest.raises(DecodeError):
            codec.decode_pack(TOPIC, bad, "S1")


def _packs(records: list[RawRecord], size: int, topic: str | None = None) -> list[RawRecord]:
    """The stage's input records packed as the worker would: per partition of 4, ``size``
    at most. With ``topic``, only that topic's records are packed (each pack where its
    last element was); the stage's other inputs stay in place."""
    held: dict[int, list[RawRecord]] = defaultdict(list)
    out: list[RawRecord] = []

    def flush(partition: int) -> None:
        group = held.pop(partition)
        value = (
            b"["
            + b",".join(
                b"[" + orjson.dumps((r.key or b"").decode()) + b"," + (r.value or b"") + b"]"
                for r in group
            )
            + b"]"
        )
        last = group[-1]
        key = group[0].key
        out.append(RawRecord(last.topic, partition, len(out), last.timestamp, key, value))

    for r in records:
        if topic is not None and r.topic != topic:
            out.append(r)
            continue
        partition = key_bytes_partition(r.key or b"", 4)
        held[partition].append(r)
        if len(held[partition]) == size:
            flush(partition)
    for partition in list(held):
        flush(partition)
    return out


def _aggregates(state: MemoryState) -> dict[str, object]:
    """The store-day sums and which receipts are marked counted (their times differ: a pack
    carries its latest element's timestamp)."""
    aggs = {k: v for k, v in state.data.items() if k.startswith("agg|")}
    for v in aggs.values():
        v.pop("last", None)  # type: ignore[union-attr]
    marks = sorted(k for k in state.data if k.startswith("seen|"))
    return {"aggs": aggs, "marks": marks}


def test_a_pack_counts_what_its_records_count_one_by_one_and_sends_each_store_day_once() -> None:
    records = INPUTS["group_aggregates"]
    packs = _packs(records, 8)
    assert len(packs) <= len(records) / 4  # the simulated day packs
    single, packed = MemoryState(), MemoryState()
    for r in records:
        RUNNER.process(GROUP, single, r)
    for pack in packs:
        outs = RUNNER.process(GROUP, packed, pack)
        group_keys = [o.key for o in outs if o.topic == "aggregates.group"]
        assert len(group_keys) == len(set(group_keys)), "one aggregate per store-day per pack"
        for o in outs:
            if o.topic == "aggregates.group":
                sent = RUNNER.codec.decode("aggregates.group", o.value)
                assert sent is not None
                held = packed.get(f"agg|{sent['store_id']}|{sent['date']}")
                assert sent["receipt_count"] == held["receipt_count"]  # the latest value
    assert _aggregates(copy.deepcopy(packed)) == _aggregates(copy.deepcopy(single))
    # A redelivered pack counts nothing again.
    before = copy.deepcopy(packed.data)
    for pack in packs:
        RUNNER.process(GROUP, packed, pack)
    assert {k: v for k, v in packed.data.items() if k.startswith("agg|")} == {
        k: v for k, v in before.items() if k.startswith("agg|")
    }


def test_a_bad_element_is_dead_lettered_and_the_rest_of_its_pack_counted() -> None:
    good = [b'["S",' + (r.value or b"") + b"]" for r in INPUTS["group_aggregates"][:2]]
    value = b"[" + b",".join([good[0], b'["S",{"receipt_id":"R-bad"}]', good[1]]) + b"]"
    state = MemoryState()
    outs = RUNNER.process(GROUP, state, RawRecord(TOPIC, 0, 1, 1, b"S", value))
    dead = [o for o in outs if o.topic == "deadletters"]
    assert len(dead) == 1
    assert RUNNER.codec.decode("deadletters", dead[0].value)["reason"] == "processing_error"
    counted = sorted(k for k in state.data if k.startswith("seen|"))
    assert len(counted) == 2


def _aggregates_of(state: MemoryState) -> dict[str, object]:
    return _aggregates(copy.deepcopy(state))


ROUTING = STAGE_BY_NAME["personal_routing"]
IDENTIFIED = "receipts.identified"


def _routing_state(state: MemoryState) -> dict[str, object]:
    """personal_routing's state but the sweeps' schedule and the processing-clock stamps (a
    pack carries its latest element's timestamp, as contributions do)."""
    data = copy.deepcopy(state.data)
    for v in data.values():
        if isinstance(v, dict):
            v.pop("updated_at", None)
    return {k: v for k, v in data.items() if not k.startswith("meta|")}


def test_packed_identified_receipts_route_and_count_as_one_by_one() -> None:
    """receipts.identified is packed too: personal_routing runs each element as its own
    step, so the consent routing's state and S-mobiili counters, the personal stores as
    compaction keeps them and the receipt totals end as with the records one by one; a
    redelivered pack changes nothing."""
    records = INPUTS["personal_routing"]
    packed_input = _packs(records, 8, IDENTIFIED)
    packs = [r for r in packed_input if r.topic == IDENTIFIED and (r.value or b"")[:1] == b"["]
    assert len(packs) > 10
    single, packed = MemoryState(), MemoryState()
    single_out = [o for r in records for o in RUNNER.process(ROUTING, single, r)]
    packed_out = [o for r in packed_input for o in RUNNER.process(ROUTING, packed, r)]
    assert _routing_state(packed) == _routing_state(single)

    def final(outs: list[Outgoing], topic: str) -> dict[bytes | None, bytes]:
        """What compaction keeps: the last value per key, a tombstone as no key. (A packed
        receipt may reach routing after a revocation it preceded one by one: it is then never
        stored, where one by one it was stored and deleted.)"""
        last = {o.key: o.value for o in outs if o.topic == topic}
        return {k: v for k, v in last.items() if v is not None}

    for topic in ("personal.line_items", "marketing.signals", "ereceipts.archive"):
        assert final(packed_out, topic) == final(single_out, topic), topic
    totals = sorted(o.value or b"" for o in single_out if o.topic == "receipts.totals")
    assert sorted(o.value or b"" for o in packed_out if o.topic == "receipts.totals") == totals
    before = _routing_state(packed)
    for pack in packs:
        RUNNER.process(ROUTING, packed, pack)
    assert _routing_state(packed) == before


@pytest.mark.parametrize("stage_name", ["group_aggregates", "personal_routing"])
def test_a_crash_at_any_changelog_write_of_packed_input_counts_every_receipt_once(
    stage_name: str,
) -> None:
    """test_crash_prefix's guarantee with packs: each element's writes go to the changelog in
    the order they would alone, so a restored prefix plus the redelivered packs end where
    the clean run ends (contributions for the group aggregates, identified receipts for
    personal_routing, among its unpacked consent and register records)."""
    stage = STAGE_BY_NAME[stage_name]
    if stage_name == "group_aggregates":
        records = _packs(INPUTS[stage_name], 8)
        view: Callable[[MemoryState], object] = _aggregates_of
    else:
        records = _packs(INPUTS[stage_name], 8, IDENTIFIED)
        view = _routing_state
    clean = ChangelogState()
    for r in records:
        RUNNER.process(stage, clean, r)
    for cut in range(0, len(clean.log) + 1, max(len(clean.log) // 150, 1)):
        restored = cut_and_restore(clean, cut)
        for r in records:
            RUNNER.process(stage, restored, r)
        assert view(restored) == view(clean), cut


class _Msg:
    """A consumed record as confluent-kafka hands it to ``inspect``'s renderer."""

    def __init__(self, key: bytes, value: bytes) -> None:
        self._key, self._value = key, value

    def topic(self) -> str:
        return TOPIC

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def timestamp(self) -> tuple[int, int]:
        return (1, 5)


def test_inspect_shows_a_packs_elements_each_with_its_masked_key() -> None:
    from stream.tools.topic_view import Masker, render

    value = b'[["S1",{"receipt_id":"R1","total_cents":5}],["S2",{"receipt_id":"R2"}]]'
    line = render(RUNNER.codec, Masker(), _Msg(b"S1", value))
    assert "error" not in line
    assert [e["value"]["total_cents"] for e in line["value"][:1]] == [5]
    assert all(e["key"].startswith("~") for e in line["value"])  # keys masked like any key
    plain = render(RUNNER.codec, Masker(), _Msg(b"S1", b'{"receipt_id":"R1"}'))
    assert len(plain["value"]) == 1 and plain["value"][0]["key"].startswith("~")
