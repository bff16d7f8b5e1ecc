"""The chaos suite's judgement, without a broker: the comparison finds a lost, a doubled and a
changed record; the consent check finds an item stored beyond consent; the traffic's opt-ins
are deferred as the method says. A green chaos run means something only if these do."""

from __future__ import annotations

import copy
from typing import Any

from stream.serde.codec import Codec
from stream.serde.registry_store import InMemoryRegistry
from stream.settings import load_rules
from stream.simulator.config import SimConfig
from stream.simulator.generator import generate
from stream.tools.replay import Driver, decoded_output, encode_event
from tests.integration.chaos_harness import (
    OPT_IN_GRACE_MS,
    _is_barrier,
    audit_as_compared,
    beyond_consent,
    compare_outputs,
    prepare_traffic,
)

T0 = 1_793_599_200_000


def _replayed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    codec = Codec(InMemoryRegistry())
    out: list[dict[str, Any]] = []
    driver = Driver(
        load_rules(), None, codec=codec, sink=lambda o: out.append(decoded_output(codec, o))
    )
    for e in events:
        driver.feed(*encode_event(codec, e))
    return out


def _stream() -> list[dict[str, Any]]:
    return list(generate(SimConfig(seed=21, households=30, receipts=300, start_ms=T0)))


def _counts(result: list[Any]) -> dict[str, tuple[int, int, int]]:
    return {t.topic: (len(t.lost), len(t.double), len(t.differ)) for t in result}


def test_identical_outputs_compare_clean_even_with_redeliveries() -> None:
    want = _replayed(_stream())
    # At-least-once: a redelivered record re-emits what is stored for it, right after.
    got = [copy.deepcopy(r) for i, r in enumerate(want) for _ in range(1 + (i % 3 == 0))]
    assert len(got) > len(want)
    result = compare_outputs(got, want)
    assert all(c == (0, 0, 0) for c in _counts(result).values()), _counts(result)
    assert {t.topic for t in result if t.compared} >= {
        "receipts.totals",
        "personal.line_items",
        "smobiili.counters",
        "aggregates.group",
        "household.bonus",
    }


def test_a_lost_receipt_a_double_count_and_a_changed_total_are_found() -> None:
    want = _replayed(_stream())
    got = copy.deepcopy(want)
    totals = [i for i, r in enumerate(got) if r["topic"] == "receipts.totals"]
    lost_id = got[totals[0]]["value"]["receipt_id"]
    del got[totals[0]]
    # the same receipt counted again under another household: double
    twice = copy.deepcopy(got[totals[2] - 1])
    assert twice["topic"] == "receipts.totals"
    twice["value"]["household_id"] += "-other"
    got.append(twice)
    # the last Bonus tally of a household-month with one receipt more: double-counted
    bonus = max(i for i, r in enumerate(got) if r["topic"] == "household.bonus")
    got[bonus] = copy.deepcopy(got[bonus])
    got[bonus]["value"]["receipt_count"] += 1
    # a line item whose final value was replaced by a tombstone: lost
    items = [r for r in got if r["topic"] == "personal.line_items" and r["value"] is not None]
    got.append({"topic": "personal.line_items", "key": items[0]["key"], "value": None})

    counts = _counts(compare_outputs(got, want))
    assert counts["receipts.totals"] == (1, 1, 0)
    assert counts["household.bonus"] == (0, 1, 0)
    assert counts["personal.line_items"] == (1, 0, 0)
    result = {t.topic: t for t in compare_outputs(got, want)}
    assert result["receipts.totals"].lost == [lost_id]


def test_an_item_stored_beyond_consent_is_found() -> None:
    events = _stream()
    out = _replayed(events)
    consents = [e for e in events if e["topic"] == "customer.consents"]
    assert beyond_consent(out, consents) == []
    item = next(r for r in out if r["topic"] == "personal.line_items" and r["value"])
    cid = item["value"]["customer_id"]
    held = max(
        (e["value"] for e in consents if e["key"] == cid and e["value"]),
        key=lambda v: v["version"],
    )
    revoked = {
        **held,
        "version": held["version"] + 1,
        "effective_at": held["effective_at"] + 1,
        "product_level_services": False,
    }
    late = consents + [{"topic": "customer.consents", "key": cid, "value": revoked}]
    found = beyond_consent(out, late)
    assert f"personal.line_items:{item['key']}" in found
    # and an item bought before the opt-in it is stored under
    reopened = {**revoked, "version": revoked["version"] + 1, "product_level_services": True}
    reopened["effective_at"] = item["value"]["purchased_at"] + 1
    late.append({"topic": "customer.consents", "key": cid, "value": reopened})
    assert f"personal.line_items:{item['key']}" in beyond_consent(out, late)


def test_opt_ins_in_the_stream_are_deferred_and_register_changes_are_barriers() -> None:
    events = list(
        generate(
            SimConfig(seed=3, households=200, receipts=4000, start_ms=T0, consent_changes=0.02)
        )
    )
    adjusted, deferred = prepare_traffic(events)
    assert len(adjusted) == len(events) and deferred > 0
    first = next(i for i, e in enumerate(events) if e["topic"] == "pos.receipts")
    assert adjusted[:first] == events[:first]  # the register before the traffic is untouched
    held = {e["key"]: e["value"] for e in events[:first] if e["topic"] == "customer.consents"}
    for e in adjusted[first:]:
        if e["topic"] != "customer.consents" or e["value"] is None:
            continue
        v = e["value"]
        prev = held.get(v["customer_id"])
        if prev is not None and v["version"] <= prev["version"]:
            continue
        opens = any(
            v[f] and (prev is None or not prev[f])
            for f in ("product_level_services", "marketing_targeting", "e_receipts")
        )
        if opens:
            assert v["effective_at"] >= e["timestamp"] + OPT_IN_GRACE_MS
        if prev is not None:
            assert v["effective_at"] > prev["effective_at"]
        held[v["customer_id"]] = v
    known = {e["key"] for e in events[:first] if e["topic"] == "customer.cards"}
    card = next(iter(known))
    assert _is_barrier({"topic": "customer.cards", "key": card, "value": {}}, known)
    assert _is_barrier({"topic": "customer.cards", "key": card, "value": None}, known)
    assert not _is_barrier({"topic": "customer.cards", "key": "new", "value": {}}, known)
    assert _is_barrier({"topic": "customer.consents", "key": "C1", "value": None}, known)
    assert not _is_barrier({"topic": "pos.receipts", "key": card, "value": {}}, known)


def test_a_revocation_purge_is_compared_without_its_counts() -> None:
    # Seen in a full chaos run: the worker had the revocation before the receipt ("deleted":
    # 0), replay after it ("deleted": 1); the record itself must still match.
    purge = {
        "action": "revocation_purge",
        "actor": "purchase-stream",
        "at": 1,
        "detail": '{"deleted": 1, "smobiili.counters": 1, "store": "personal.line_items"}',
        "outcome": "ok",
        "purpose": "product_level_services",
        "subject_customer_id": "C1",
    }
    other_time = {**purge, "at": 2, "detail": purge["detail"].replace("1", "0")}
    assert audit_as_compared(purge) == audit_as_compared(other_time)
    assert audit_as_compared(purge)["detail"] == {"store": "personal.line_items"}
    other_person = {**purge, "subject_customer_id": "C2"}
    assert audit_as_compared(purge) != audit_as_compared(other_person)
    # Other audit records keep their detail.
    access = {**purge, "action": "read", "detail": '{"n": 3}'}
    assert audit_as_compared(access)["detail"] == '{"n": 3}'
