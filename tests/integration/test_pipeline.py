"""The real worker on the embedded broker gives the same results as ``replay`` on the same events.

Events from the simulator (with deliberately broken records and raw undecodable bytes) are
produced with confluent-kafka to noida-db; a ``purchase-stream worker`` process consumes
them; the test reads every output topic and the dead-letter topic back and compares them
with what the in-process driver produces from the same events.

Produced in three phases, waiting for the worker to drain in between, because the stages
run concurrently on the broker while ``replay`` is sequential: (A) catalogue, cards and
consents known before the first receipt; (B) receipts and later card changes (co-partitioned
with the receipts, so their order is the same everywhere); (C) later consent changes.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream.engine.partitioning import key_partition
from stream.local.broker import EmbeddedBroker
from stream.local.offsets import read_all
from stream.local.registry_server import EmbeddedRegistryServer
from stream.local.topics import TOPICS
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.serde.registry_store import InMemoryRegistry
from stream.settings import load_rules, load_settings
from stream.simulator.config import SimConfig
from stream.simulator.generator import generate
from stream.tools.replay import Driver, decoded_output, encode_event
from tests.integration.worker_harness import WorkerProcess, phases, produce_events

OUTPUTS = [
    name
    for name, spec in TOPICS.items()
    if not spec.internal
    and name not in ("pos.receipts", "customer.cards", "customer.consents", "product.catalog")
]


def _raw_bad_events(ts: int) -> list[dict[str, Any]]:
    def ev(key: str, value: bytes) -> dict[str, Any]:
        return {
            "topic": "pos.receipts",
            "key": key,
            "timestamp": ts,
            "value_b64": base64.b64encode(value).decode(),
        }

    return [
        ev("garbage-1", b"\x13\x37 not avro at all"),
        ev("wrong-magic", b"\x01\x00\x00\x00\x01\x02\x03"),
        ev("unknown-id", b"\x00\x00\x00\x27\x0f\x02\x04"),
        ev("truncated", b"\x00\x00\x00\x00\x01\x08abc"),
    ]


def _final_by_key(records: list[dict[str, Any]]) -> dict[tuple[str, str | None], Any]:
    out: dict[tuple[str, str | None], Any] = {}
    for r in records:
        out[(r["topic"], r["key"])] = r["value"]
    return out


def _canon(r: dict[str, Any]) -> tuple[Any, ...]:
    """A record with the fields that legitimately differ between runs taken out."""
    value = r["value"]
    if value is not None and r["topic"] == "deadletters":
        value = {k: v for k, v in value.items() if k not in ("partition", "offset", "failed_at")}
    if value is not None and r["topic"] == "audit.log":
        value = {k: v for k, v in value.items() if k != "at"}
    return (r["topic"], r["key"], repr(sorted(value.items())) if value is not None else None)


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
def test_worker_on_broker_matches_replay(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path, pack: bool
) -> None:
    """``pack``: settings ``pack_internal_topics`` (the design before packing is kept as a
    setting, which ``make bench`` measures against packing: it must be as correct)."""
    # A broker of this test's own: the comparison needs topics no other test writes to.
    own_broker = broker_factory(f"pipeline-{'packed' if pack else 'unpacked'}", topics=True)
    now = int(time.time() * 1000)
    cfg = SimConfig(
        seed=5, households=120, receipts=1200, start_ms=now - 900_000, receipts_per_second=2.0
    )
    events = list(generate(cfg))
    a, b, c = phases(events)
    b = b + _raw_bad_events(b[-1]["timestamp"])
    assert len(b) > 1000 and len(c) > 0

    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "schemas.json").start()
    worker = WorkerProcess(
        own_broker.bootstrap,
        registry.url,
        tmp_path / "worker",
        app_id=f"it-{uuid.uuid4().hex[:8]}",
        extra_env={
            "PURCHASE_STREAM_API_JWT_SECRET": API_SECRET,
            "PURCHASE_STREAM_PACK_INTERNAL_TOPICS": "true" if pack else "false",
        },
    ).start()
    try:
        codec = Codec(ConfluentRegistryClient(registry.url))
        for phase in (a, b, c):
            produce_events(own_broker.bootstrap, codec, phase)
            worker.wait_idle()
        served = _bonus_over_http(worker.web_port, events)
        assert worker.stop() == 0, worker.log_tail()
        on_broker: list[dict[str, Any]] = []
        for topic in OUTPUTS:
            for rec in read_all(own_broker.bootstrap, topic, timeout=20):
                on_broker.append(decoded_output(codec, _outgoing(topic, rec.key, rec.value)))
        contributions = read_all(own_broker.bootstrap, "aggregates.contributions", timeout=20)
        packed = [
            (
                rec.partition,
                codec.decode_pack("aggregates.contributions", rec.value, codec.decode_key(rec.key)),
            )
            for rec in contributions
        ]
        # A pack is a JSON array; a plain record is one contribution, a JSON object.
        plain = [rec.value is not None and rec.value.startswith(b"{") for rec in contributions]
        identified = [
            (
                rec.partition,
                codec.decode_pack("receipts.identified", rec.value, codec.decode_key(rec.key)),
            )
            for rec in read_all(own_broker.bootstrap, "receipts.identified", timeout=20)
        ]
    finally:
        worker.stop()
        registry.stop()

    replayed: list[dict[str, Any]] = []
    rcodec = Codec(InMemoryRegistry())
    driver = Driver(
        load_rules(),
        tmp_path / "replay",
        codec=rcodec,
        sink=lambda o: replayed.append(decoded_output(rcodec, o)),
    )
    replay_contributed: set[str] = set()
    replay_identified: set[str] = set()
    process = driver.runner.process

    def capture(stage: Any, state: Any, rec: Any) -> Any:
        if rec.topic == "aggregates.contributions":
            replay_contributed.update(
                c["receipt_id"] for _k, c in rcodec.decode_pack(rec.topic, rec.value, None) if c
            )
        if rec.topic == "receipts.identified":
            replay_identified.update(
                r["receipt"]["receipt_id"]
                for _k, r in rcodec.decode_pack(rec.topic, rec.value, None)
                if r
            )
        return process(stage, state, rec)

    driver.runner.process = capture  # type: ignore[method-assign]
    for e in a + b + c:
        driver.feed(*encode_event(rcodec, e))

    # The worker's HTTP API serves the same Bonus figures as the query on replay state.
    from topologies.queries.household_bonus import household_bonus_month

    bonus_state = driver.states["household_bonus"]
    for (hh, month), body in served.items():
        assert body["bonus"] == household_bonus_month(bonus_state, hh, month), (hh, month)
    assert any(b["bonus"]["receipt_count"] > 0 for b in served.values())
    # Each API call left one audit record on the broker (replay made no API calls).
    api_audit = [
        r
        for r in on_broker
        if r["topic"] == "audit.log" and r["value"]["actor"] != "purchase-stream"
    ]
    assert Counter((a["value"]["action"], a["value"]["outcome"]) for a in api_audit) == Counter(
        {
            ("read_household_bonus", "ok"): len(served),
            ("read_household_bonus", "unauthenticated"): 2,
            ("read_household_bonus", "rejected"): 1,  # the bad month: audited too
        }
    )
    on_broker = [r for r in on_broker if r not in api_audit]

    # The worker packed a batch's contributions per partition (stream/engine/packing.py): fewer
    # records than contributions, and every receipt's contribution in one of them. Unpacked,
    # every record is one contribution.
    if pack:
        assert max(len(p) for _partition, p in packed) > 1
        assert max(len(p) for _partition, p in identified) > 1
    else:
        assert {len(p) for _partition, p in packed} == {1}
        assert {len(p) for _partition, p in identified} == {1}
        assert all(plain)
    # Every identified receipt of replay went through the broker, each exactly where its
    # customer's key goes (the consent join's state is there).
    identified_ids = {r["receipt"]["receipt_id"] for _p, p in identified for _k, r in p if r}
    assert identified_ids == replay_identified
    contributed = [c["receipt_id"] for _partition, p in packed for _key, c in p if c is not None]
    assert set(contributed) == replay_contributed
    # Each element sits on the partition its own key goes to (its store's state is there).
    partitions = load_settings().partitions  # the worker's, as the topics were created
    for partition, p in packed + identified:
        assert {key_partition(k or "", partitions) for k, _c in p} == {partition}

    # Something of every kind really flowed.
    counts = Counter(r["topic"] for r in on_broker)
    for topic in (
        "receipts.totals",
        "personal.line_items",
        "marketing.signals",
        "ereceipts.archive",
        "smobiili.counters",
        "aggregates.group",
        "deadletters",
        "audit.log",
    ):
        assert counts[topic] > 0, f"nothing on {topic}: {counts}"
    reasons = Counter(r["value"]["reason"] for r in on_broker if r["topic"] == "deadletters")
    for code in ("undecodable", "unknown_schema_id"):
        assert reasons[code] >= 1, reasons

    # Streams: the same distinct records (at-least-once may repeat a record on the broker).
    for topic in ("receipts.totals", "deadletters", "audit.log"):
        got = {_canon(r) for r in on_broker if r["topic"] == topic}
        want = {_canon(r) for r in replayed if r["topic"] == topic}
        assert got == want, f"{topic}: {len(got - want)} extra, {len(want - got)} missing"

    # Compacted stores: the same final value (or tombstone) per key.
    for topic in (
        "personal.line_items",
        "marketing.signals",
        "ereceipts.archive",
        "aggregates.group",
    ):
        got_final = _final_by_key([r for r in on_broker if r["topic"] == topic])
        want_final = _final_by_key([r for r in replayed if r["topic"] == topic])
        assert got_final == want_final, topic

    # S-mobiili counters: keyed by customer with the month in the value (not compacted), so
    # the same last figures per customer and month. A redelivery on the broker re-sends the
    # month as it is then, so the streams themselves may differ in repeats. ``updated_at``
    # is the processing clock of the month's last change, and which receipt is last can
    # differ: a person with two cards has receipts on two ``pos.receipts`` partitions, which
    # reach the customer's partition in an order Kafka does not fix (seen in this test: the
    # same sums, the last two receipts swapped). The sums do not depend on the order.
    def last_counters(records: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
        return {
            (r["key"], r["value"]["month"]): {
                k: v for k, v in r["value"].items() if k != "updated_at"
            }
            for r in records
            if r["topic"] == "smobiili.counters"
        }

    got_counters, want_counters = last_counters(on_broker), last_counters(replayed)
    assert got_counters.keys() == want_counters.keys()
    differ = {
        key: {f: (v, want_counters[key][f]) for f, v in got.items() if v != want_counters[key][f]}
        for key, got in got_counters.items()
        if got != want_counters[key]
    }
    assert differ == {}, f"{len(differ)} customer-months differ, e.g. {list(differ.items())[:3]}"

    driver.close()

    # Each receipt counted once: distinct receipt totals = receipts the driver routed.
    totals = {r["value"]["receipt_id"] for r in on_broker if r["topic"] == "receipts.totals"}
    routed = driver.metrics.registry.get_sample_value(
        "purchase_stream_stage_events_total", {"stage": "personal_routing", "event": "routed"}
    )
    assert len(totals) == routed


API_SECRET = "integration-test-jwt-secret-0123456789abcdef"


def _bonus_over_http(port: int, events: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """GET the Bonus of a few households; also check that the API refuses bad requests."""
    import json
    import urllib.error
    import urllib.request

    from stream.settings import load_rules

    rules = load_rules()
    base = f"http://127.0.0.1:{port}/v1/households"
    # Each household's main member *now*, by the card register (what the API asks).
    cards: dict[str, Any] = {}
    for e in events:
        if e["topic"] == "customer.cards":
            cards[e["key"]] = e["value"]
    mains = {c["household_id"]: c["customer_id"] for c in cards.values() if c
             and c["role"] == "MAIN_MEMBER"}  # fmt: skip
    first = next(x for x in events if x["topic"] == "pos.receipts")
    month0 = rules.local_month(first["value"]["purchased_at"])
    wanted: dict[tuple[str, str], None] = {(hh, month0): None for hh in sorted(mains)[:8]}

    def get(path: str, token: str | None) -> tuple[int, Any]:
        req = urllib.request.Request(f"{base}/{path}")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    from stream.serve import auth

    def main_member(hh: str) -> str:
        return auth.issue(API_SECRET, mains[hh])

    hh, month = next(iter(wanted))
    assert get(f"{hh}/bonus/{month}", None)[0] == 401
    assert get(f"{hh}/bonus/{month}", "wrong-token")[0] == 401
    assert get(f"{hh}/bonus/2026-13x", main_member(hh))[0] == 400
    served = {}
    for hh, month in wanted:
        status, body = get(f"{hh}/bonus/{month}", main_member(hh))
        assert status == 200, body
        served[(hh, month)] = body
    return served


def _outgoing(topic: str, key: bytes | None, value: bytes | None) -> Any:
    from stream.engine.runner import Outgoing

    return Outgoing(topic, key, value)
