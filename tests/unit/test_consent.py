"""Consent: versions, "on without a break" in time, revocation and erasure.

Spec: docs/domain.md §2 (per person; unknown = every flag off; a lower version is ignored) and §3
(Decision "consent in time"; Revocation: on -> off deletes the store with tombstones and an
audit record; turning back on starts from the new effective_at).
"""

from __future__ import annotations

import copy
import json

import pytest

from tests.unit.topo_helpers import (
    DAY_MS,
    HOUR_MS,
    T0,
    card,
    consent,
    emits,
    identified,
    receipt,
    run,
    stored,
)
from topologies import consent as consent_rules
from topologies import counters, personal_routing
from topologies.consent import E_RECEIPTS, FLAGS, MARKETING_TARGETING, PRODUCT_LEVEL_SERVICES
from topologies.records import Emit
from topologies.state import MemoryState

CID = "CUST-0001"
ALL_ON = {flag: True for flag in FLAGS}
GATED = {
    PRODUCT_LEVEL_SERVICES: ("pl", "personal.line_items"),
    MARKETING_TARGETING: ("ms", "marketing.signals"),
    E_RECEIPTS: ("er", "ereceipts.archive"),
}


def give(state: MemoryState, record: dict | None, now: int, key: str = CID):
    return run(personal_routing, state, "customer.consents", key, record, now)


def route(state: MemoryState, r: dict, now: int, c: dict | None = None):
    c = card() if c is None else c
    return run(
        personal_routing, state, "receipts.identified", c["customer_id"], identified(r, c), now
    )


def gated_keys(state: MemoryState, cid: str = CID) -> list[str]:
    return sorted(
        k for k in state.data if k.split("|")[0] in ("pl", "ms", "er") and k.split("|")[1] == cid
    )


def person_keys(data: dict, cid: str) -> list[str]:
    """Every state key that belongs to the person (any segment equal to the id), except the
    retention index (``exp|``), which test_retention covers."""
    return sorted(k for k in data if cid in k.split("|") and not k.startswith("exp|"))


def audit(now: int, action: str, cid: str, purpose: str, detail: dict) -> Emit:
    return Emit(
        "audit.log",
        None,
        {
            "at": now,
            "actor": "purchase-stream",
            "action": action,
            "subject_customer_id": cid,
            "purpose": purpose,
            "outcome": "ok",
            "detail": json.dumps(detail, sort_keys=True),
        },
    )


# --- the pure rules -----------------------------------------------------------------------


@pytest.mark.parametrize("flag", FLAGS)
def test_unknown_customer_is_fail_closed(flag: str) -> None:
    assert consent_rules.decide(None, flag, T0) == consent_rules.CONSENT_UNKNOWN


def test_first_record_is_applied() -> None:
    record = consent(version=3, effective_at=T0, product_level_services=True)
    new, revoked = consent_rules.apply(None, record)
    assert revoked == []
    assert new is not None
    assert new["version"] == 3
    assert new["flags"] == {**{f: False for f in FLAGS}, "product_level_services": True}
    assert consent_rules.decide(new, "product_level_services", T0) == consent_rules.ALLOWED
    assert consent_rules.decide(new, "marketing_targeting", T0) == consent_rules.CONSENT_OFF


@pytest.mark.parametrize("version", [1, 2])
def test_lower_or_equal_version_ignored(version: int) -> None:
    held, _ = consent_rules.apply(None, consent(version=2, effective_at=T0, **ALL_ON))
    new, revoked = consent_rules.apply(held, consent(version=version, effective_at=T0 + 1))
    assert new is None
    assert revoked == []


def test_apply_reports_exactly_the_flags_turned_off() -> None:
    held, _ = consent_rules.apply(None, consent(version=1, effective_at=T0, **ALL_ON))
    _, revoked = consent_rules.apply(
        held,
        consent(version=2, effective_at=T0 + 1, marketing_targeting=True, direct_marketing=True),
    )
    assert sorted(revoked) == ["e_receipts", "external_audiences", "product_level_services"]


def test_off_to_off_is_not_a_revocation() -> None:
    held, _ = consent_rules.apply(None, consent(version=1, effective_at=T0))
    _, revoked = consent_rules.apply(held, consent(version=2, effective_at=T0 + 1))
    assert revoked == []


def test_decide_boundaries_around_effective_at() -> None:
    held, _ = consent_rules.apply(
        None, consent(version=1, effective_at=T0, product_level_services=True)
    )
    flag = "product_level_services"
    assert consent_rules.decide(held, flag, T0 - 1) == consent_rules.CONSENT_LAPSED
    assert consent_rules.decide(held, flag, T0) == consent_rules.ALLOWED
    assert consent_rules.decide(held, flag, T0 + 1) == consent_rules.ALLOWED
    assert consent_rules.decide(held, "e_receipts", T0 + 1) == consent_rules.CONSENT_OFF


# --- consent in time (stage 2) ------------------------------------------------------------


def test_consent_lapsed_between_purchase_and_processing_is_rejected() -> None:
    # On at purchase, off, then on again before the late receipt arrives: not consented.
    state = MemoryState()
    give(state, consent(version=1, effective_at=T0 - DAY_MS, **ALL_ON), T0 - DAY_MS)
    give(state, consent(version=2, effective_at=T0 + HOUR_MS), T0 + HOUR_MS)
    give(state, consent(version=3, effective_at=T0 + 2 * HOUR_MS, **ALL_ON), T0 + 2 * HOUR_MS)
    result = route(state, receipt(purchased_at=T0), T0 + 3 * HOUR_MS)
    assert gated_keys(state) == []
    assert sorted(e.topic for e in result.emits) == ["receipts.totals"]
    assert result.routed[("personal", "consent_lapsed")] == 3
    assert result.routed[("marketing", "consent_lapsed")] == 3
    assert result.routed[("ereceipt", "consent_lapsed")] == 3
    # A receipt purchased after the re-opening does go in.
    route(state, receipt("R-0002", purchased_at=T0 + 2 * HOUR_MS + 1), T0 + 3 * HOUR_MS)
    assert gated_keys(state) == [
        "er|CUST-0001|R-0002",
        "ms|CUST-0001|R-0002",
        "pl|CUST-0001|R-0002",
    ]


def test_break_in_one_flag_only_closes_that_store() -> None:
    state = MemoryState()
    give(state, consent(version=1, effective_at=T0 - DAY_MS, **ALL_ON), T0 - DAY_MS)
    off_pls = {**ALL_ON, "product_level_services": False}
    give(state, consent(version=2, effective_at=T0 + HOUR_MS, **off_pls), T0 + HOUR_MS)
    give(state, consent(version=3, effective_at=T0 + 2 * HOUR_MS, **ALL_ON), T0 + 2 * HOUR_MS)
    route(state, receipt(purchased_at=T0), T0 + 3 * HOUR_MS)
    assert gated_keys(state) == ["er|CUST-0001|R-0001", "ms|CUST-0001|R-0001"]


def test_receipt_from_before_an_opt_in_is_rejected() -> None:
    state = MemoryState()
    give(state, consent(version=1, effective_at=T0 + HOUR_MS, **ALL_ON), T0 + HOUR_MS)
    result = route(state, receipt(purchased_at=T0), T0 + 2 * HOUR_MS)
    assert gated_keys(state) == []
    assert [e.topic for e in result.emits] == ["receipts.totals"]


def test_receipt_from_before_an_opt_in_after_an_off_record_is_rejected() -> None:
    state = MemoryState()
    give(state, consent(version=1, effective_at=T0 - DAY_MS), T0 - DAY_MS)
    give(state, consent(version=2, effective_at=T0 + HOUR_MS, **ALL_ON), T0 + HOUR_MS)
    route(state, receipt("R-0001", purchased_at=T0), T0 + 2 * HOUR_MS)
    route(state, receipt("R-0002", purchased_at=T0 + HOUR_MS), T0 + 2 * HOUR_MS)
    assert gated_keys(state) == [
        "er|CUST-0001|R-0002",
        "ms|CUST-0001|R-0002",
        "pl|CUST-0001|R-0002",
    ]


def test_continuously_on_is_allowed_across_versions() -> None:
    state = MemoryState()
    give(state, consent(version=1, effective_at=T0 - DAY_MS, **ALL_ON), T0 - DAY_MS)
    # Other flags change, the gated ones stay on without a break.
    v2 = {**ALL_ON, "direct_marketing": False, "external_audiences": False}
    give(state, consent(version=2, effective_at=T0 + HOUR_MS, source="WEB", **v2), T0 + HOUR_MS)
    give(state, consent(version=3, effective_at=T0 + 2 * HOUR_MS, **ALL_ON), T0 + 2 * HOUR_MS)
    result = route(state, receipt(purchased_at=T0), T0 + 3 * HOUR_MS)
    assert gated_keys(state) == [
        "er|CUST-0001|R-0001",
        "ms|CUST-0001|R-0001",
        "pl|CUST-0001|R-0001",
    ]
    assert result.routed[("personal", "allowed")] == 3


def test_purchase_exactly_at_effective_at_is_allowed() -> None:
    state = MemoryState()
    give(state, consent(version=1, effective_at=T0, product_level_services=True), T0)
    route(state, receipt(purchased_at=T0), T0 + 1)
    assert gated_keys(state) == ["pl|CUST-0001|R-0001"]


def test_future_effective_at_is_not_yet_consent() -> None:
    # Consent processed at T0 but effective from T0 + 1 h: a purchase in between is not covered.
    state = MemoryState()
    give(state, consent(version=1, effective_at=T0 + HOUR_MS, **ALL_ON), T0)
    route(state, receipt("R-0001", purchased_at=T0 + 1), T0 + 2)
    route(state, receipt("R-0002", purchased_at=T0 + HOUR_MS + 1), T0 + HOUR_MS + 2)
    assert gated_keys(state) == [
        "er|CUST-0001|R-0002",
        "ms|CUST-0001|R-0002",
        "pl|CUST-0001|R-0002",
    ]


def test_lower_version_arriving_after_higher_is_ignored() -> None:
    state = MemoryState()
    give(state, consent(version=2, effective_at=T0 - DAY_MS, **ALL_ON), T0 - DAY_MS)
    route(state, receipt("R-0001", purchased_at=T0), T0 + 1)
    held = copy.deepcopy(state.get("consent|CUST-0001"))
    # The older "all off" change arrives late: ignored, nothing purged, nothing emitted.
    result = give(state, consent(version=1, effective_at=T0 + HOUR_MS), T0 + HOUR_MS)
    assert result.events["stale_consent"] == 1
    assert result.emits == []
    assert state.get("consent|CUST-0001") == held
    assert gated_keys(state) == [
        "er|CUST-0001|R-0001",
        "ms|CUST-0001|R-0001",
        "pl|CUST-0001|R-0001",
    ]
    # ... and it does not break the run either.
    route(state, receipt("R-0002", purchased_at=T0 + 2 * HOUR_MS), T0 + 3 * HOUR_MS)
    assert "pl|CUST-0001|R-0002" in gated_keys(state)


def test_equal_version_redelivery_with_other_content_is_ignored() -> None:
    state = MemoryState()
    give(state, consent(version=5, effective_at=T0 - DAY_MS, **ALL_ON), T0 - DAY_MS)
    route(state, receipt(), T0 + 1)
    result = give(state, consent(version=5, effective_at=T0 + HOUR_MS), T0 + HOUR_MS)
    assert result.events["stale_consent"] == 1
    assert result.emits == []
    assert len(gated_keys(state)) == 3


def test_stale_opt_in_after_opt_out_does_not_open_the_store() -> None:
    state = MemoryState()
    give(state, consent(version=2, effective_at=T0 - HOUR_MS), T0 - HOUR_MS)
    give(state, consent(version=1, effective_at=T0 - DAY_MS, **ALL_ON), T0 - HOUR_MS + 1)
    route(state, receipt(purchased_at=T0), T0 + 1)
    assert gated_keys(state) == []


def test_stale_off_record_arriving_between_on_records_is_no_break() -> None:
    state = MemoryState()
    give(state, consent(version=1, effective_at=T0 - DAY_MS, **ALL_ON), T0 - DAY_MS)
    give(state, consent(version=3, effective_at=T0 + 2 * HOUR_MS, **ALL_ON), T0 + 2 * HOUR_MS)
    give(state, consent(version=2, effective_at=T0 + HOUR_MS), T0 + 3 * HOUR_MS)
    route(state, receipt(purchased_at=T0), T0 + 4 * HOUR_MS)
    assert len(gated_keys(state)) == 3


def test_consent_is_per_person_not_per_household() -> None:
    state = MemoryState()
    anna = card("CARD-A", "CUST-A", "HH-1", "MAIN_MEMBER")
    bert = card("CARD-B", "CUST-B", "HH-1", "MEMBER")
    give(state, consent("CUST-A", effective_at=T0 - DAY_MS, **ALL_ON), T0 - DAY_MS, key="CUST-A")
    route(state, receipt("R-A"), T0 + 1, anna)
    route(state, receipt("R-B"), T0 + 1, bert)
    assert gated_keys(state, "CUST-A") == ["er|CUST-A|R-A", "ms|CUST-A|R-A", "pl|CUST-A|R-A"]
    assert gated_keys(state, "CUST-B") == []


# --- revocation ---------------------------------------------------------------------------


def two_people_with_everything() -> MemoryState:
    """CUST-0001 with two receipts and CUST-00010 (a key-prefix neighbour) with one."""
    state = MemoryState()
    other = card("CARD-0010", "CUST-00010", "HH-0010")
    for cid in (CID, "CUST-00010"):
        give(state, consent(cid, effective_at=T0 - DAY_MS, **ALL_ON), T0 - DAY_MS, key=cid)
    route(state, receipt("R-0001"), T0 + 1)
    route(state, receipt("R-0002", purchased_at=T0 + 10), T0 + 11)
    route(state, receipt("R-0003"), T0 + 1, other)
    return state


@pytest.mark.parametrize("flag", list(GATED))
def test_revocation_deletes_that_store_with_tombstones_and_audit(flag: str) -> None:
    prefix, topic = GATED[flag]
    state = two_people_with_everything()
    before = copy.deepcopy(state.data)
    now = T0 + DAY_MS
    result = give(state, consent(version=2, effective_at=now, **{**ALL_ON, flag: False}), now)
    assert result.rejects == []
    # The S-mobiili counters are made of the product-level line items: they go with them.
    pl = flag == "product_level_services"
    assert [e for e in result.emits if e.topic not in ("audit.log", topic)] == (
        [Emit("smobiili.counters", CID, counters.removal_record(CID, "2024-03", now))] if pl else []
    )
    assert sorted(emits(result, topic), key=lambda e: e.key or "") == [
        Emit(topic, "CUST-0001/R-0001", None),
        Emit(topic, "CUST-0001/R-0002", None),
    ]
    detail = {"store": topic, "deleted": 2} | ({"smobiili.counters": 1} if pl else {})
    assert emits(result, "audit.log") == [audit(now, "revocation_purge", CID, flag, detail)]
    removed = {f"{prefix}|CUST-0001|R-0001", f"{prefix}|CUST-0001|R-0002"}
    if pl:
        removed.add("cn|CUST-0001|2024-03")
    changed = {k for k in before if before[k] != state.data.get(k)}
    assert changed == removed | {"consent|CUST-0001"}
    assert set(state.data) == set(before) - removed
    # Other stores of the same person stay; the other person is untouched.
    assert state.get("rt|CUST-0001|R-0001") == before["rt|CUST-0001|R-0001"]
    assert state.get("rc|2024-03-05|CUST-0001|R-0001") == before["rc|2024-03-05|CUST-0001|R-0001"]
    assert {k: state.data[k] for k in person_keys(state.data, "CUST-00010")} == {
        k: before[k] for k in person_keys(before, "CUST-00010")
    }
    assert len(person_keys(state.data, "CUST-00010")) == 7


def test_revoking_everything_purges_all_three_stores() -> None:
    state = two_people_with_everything()
    now = T0 + DAY_MS
    result = give(state, consent(version=2, effective_at=now), now)
    assert gated_keys(state) == []
    assert len(gated_keys(state, "CUST-00010")) == 3
    tombstones = sorted(
        (e.topic, e.key) for e in result.emits if e.topic not in ("audit.log", "smobiili.counters")
    )
    assert tombstones == sorted(
        (topic, f"CUST-0001/{rid}") for _p, topic in GATED.values() for rid in ("R-0001", "R-0002")
    )
    store_topics = {topic for _p, topic in GATED.values()}
    assert all(e.value is None for e in result.emits if e.topic in store_topics)
    assert [e.value["removed"] for e in emits(result, "smobiili.counters")] == [True]
    assert stored(state, "cn|") == {"cn|CUST-00010|2024-03": state.get("cn|CUST-00010|2024-03")}
    assert sorted(e.value["purpose"] for e in emits(result, "audit.log")) == sorted(GATED)
    assert sorted(stored(state, "rt|")) == [
        "rt|CUST-00010|R-0003",
        "rt|CUST-0001|R-0001",
        "rt|CUST-0001|R-0002",
    ]


def test_revocation_of_flags_without_a_store_deletes_nothing() -> None:
    state = two_people_with_everything()
    before = {k: v for k, v in state.data.items() if not k.startswith("consent|")}
    now = T0 + DAY_MS
    off = {**ALL_ON, "external_audiences": False, "direct_marketing": False}
    result = give(state, consent(version=2, effective_at=now, **off), now)
    assert result.emits == []
    assert {k: v for k, v in state.data.items() if not k.startswith("consent|")} == before


def test_stale_revocation_purges_nothing() -> None:
    state = MemoryState()
    give(state, consent(version=3, effective_at=T0 - DAY_MS, **ALL_ON), T0 - DAY_MS)
    route(state, receipt(), T0 + 1)
    result = give(state, consent(version=2, effective_at=T0 + HOUR_MS), T0 + HOUR_MS)
    assert result.emits == []
    assert len(gated_keys(state)) == 3


def test_revocation_with_empty_store_is_still_audited() -> None:
    state = MemoryState()
    give(state, consent(version=1, effective_at=T0 - DAY_MS, product_level_services=True), T0)
    now = T0 + HOUR_MS
    result = give(state, consent(version=2, effective_at=now), now)
    assert result.emits == [
        audit(
            now,
            "revocation_purge",
            CID,
            "product_level_services",
            {"store": "personal.line_items", "deleted": 0, "smobiili.counters": 0},
        )
    ]


def test_re_enabling_starts_from_the_new_effective_at() -> None:
    state = MemoryState()
    on_at, off_at, back_at = T0 - DAY_MS, T0 + HOUR_MS, T0 + 3 * HOUR_MS
    give(state, consent(version=1, effective_at=on_at, product_level_services=True), on_at)
    route(state, receipt("R-BEFORE", purchased_at=T0), T0 + 1)
    give(state, consent(version=2, effective_at=off_at), off_at)
    assert gated_keys(state) == []
    give(state, consent(version=3, effective_at=back_at, product_level_services=True), back_at)
    # Late arrivals: bought while on (before the break), while off, and after re-enabling.
    route(state, receipt("R-LATE-ON", purchased_at=T0 + 2), back_at + 1)
    route(state, receipt("R-WHILE-OFF", purchased_at=off_at + 1), back_at + 1)
    route(state, receipt("R-AT", purchased_at=back_at), back_at + 1)
    route(state, receipt("R-AFTER", purchased_at=back_at + 1), back_at + 2)
    assert gated_keys(state) == ["pl|CUST-0001|R-AFTER", "pl|CUST-0001|R-AT"]
    # The purged receipt's total record is still there and is not routed again.
    assert state.get("rt|CUST-0001|R-BEFORE") is not None
    again = route(state, receipt("R-BEFORE", purchased_at=T0), back_at + 5)
    assert again.events["duplicate"] == 1
    assert gated_keys(state) == ["pl|CUST-0001|R-AFTER", "pl|CUST-0001|R-AT"]


# --- erasure ------------------------------------------------------------------------------


def test_erasure_deletes_everything_about_the_person_in_stage_2() -> None:
    state = two_people_with_everything()
    # Also a total-only receipt (total record and e-receipt, no lines).
    route(
        state,
        receipt("R-0004", chain="HOTEL", lines=[], total_cents=9_000, bonus_eligible_cents=9_000),
        T0 + 20,
    )
    before = copy.deepcopy(state.data)
    # consent, 3 rt, 2 rc, 2 pl, 2 ms, 3 er, 1 cn (both receipts in March)
    assert len(person_keys(state.data, CID)) == 14
    now = T0 + DAY_MS
    held_version = state.data[f"consent|{CID}"]["version"]
    result = give(state, None, now)
    assert result.rejects == []
    # Only the suppression marker is left: it stops redeliveries from recreating the person.
    assert person_keys(state.data, CID) == [f"erased|{CID}"]
    assert state.data[f"erased|{CID}"] == {"erased_at": now, "version": held_version}
    # The other person, whose id starts with ours, is untouched.
    assert {k: state.data[k] for k in person_keys(state.data, "CUST-00010")} == {
        k: before[k] for k in person_keys(before, "CUST-00010")
    }
    assert len(person_keys(state.data, "CUST-00010")) == 7
    assert emits(result, "smobiili.counters") == [
        Emit("smobiili.counters", CID, counters.removal_record(CID, "2024-03", now))
    ]
    tombstones = sorted(
        (e.topic, e.key, e.value)
        for e in result.emits
        if e.topic not in ("audit.log", "smobiili.counters")
    )
    assert tombstones == sorted(
        [
            ("personal.line_items", "CUST-0001/R-0001", None),
            ("personal.line_items", "CUST-0001/R-0002", None),
            ("marketing.signals", "CUST-0001/R-0001", None),
            ("marketing.signals", "CUST-0001/R-0002", None),
            ("ereceipts.archive", "CUST-0001/R-0001", None),
            ("ereceipts.archive", "CUST-0001/R-0002", None),
            ("ereceipts.archive", "CUST-0001/R-0004", None),
        ]
    )
    assert emits(result, "audit.log") == [
        audit(
            now,
            "erasure",
            CID,
            "customer_erased",
            {
                "personal.line_items": 2,
                "marketing.signals": 2,
                "ereceipts.archive": 3,
                "smobiili.counters": 1,
                "recall_index": 2,
                "receipt_totals": 3,
                "card_links": 0,
            },
        )
    ]


def test_erasure_then_new_receipt_is_fail_closed() -> None:
    state = two_people_with_everything()
    give(state, None, T0 + DAY_MS)
    route(state, receipt("R-0005", purchased_at=T0 + DAY_MS + 1), T0 + DAY_MS + 2)
    assert gated_keys(state) == []
    assert person_keys(state.data, CID) == [
        f"erased|{CID}",
        "rc|2024-03-06|CUST-0001|R-0005",
        "rt|CUST-0001|R-0005",
    ]


def test_erasure_blocks_redelivered_old_receipts_and_old_consent_versions() -> None:
    state = two_people_with_everything()
    held_version = state.data[f"consent|{CID}"]["version"]
    erased_at = T0 + DAY_MS
    give(state, None, erased_at)
    # A receipt bought before the erasure, (re)delivered after it, stores nothing.
    result = route(state, receipt("R-0009", purchased_at=T0 + 5), erased_at + 10)
    # ... except the total record for the household Bonus ledger (never stored here).
    assert [(e.topic, e.value["receipt_id"]) for e in result.emits if e.value] == [
        ("receipts.totals", "R-0009")
    ]
    assert result.events["erased_customer"] == 1
    assert person_keys(state.data, CID) == [f"erased|{CID}"]
    # An old consent version redelivered does not bring the person back ...
    result = give(state, consent(version=held_version), erased_at + 20)
    assert result.events["stale_consent"] == 1
    assert f"consent|{CID}" not in state.data
    # ... while a newer one (the person becomes a customer again) is accepted.
    result = give(state, consent(version=held_version + 1), erased_at + 30)
    assert result.events["consent_updated"] == 1
    assert state.data[f"consent|{CID}"]["version"] == held_version + 1


def test_erasure_of_unknown_person_is_audited_and_changes_nothing() -> None:
    state = two_people_with_everything()
    before = copy.deepcopy(state.data)
    now = T0 + DAY_MS
    result = give(state, None, now, key="CUST-NOBODY")
    # Nothing changes but the suppression marker for the erased id.
    assert state.data == {**before, "erased|CUST-NOBODY": {"erased_at": now, "version": -1}}
    assert result.emits == [
        audit(
            now,
            "erasure",
            "CUST-NOBODY",
            "customer_erased",
            {
                "personal.line_items": 0,
                "marketing.signals": 0,
                "ereceipts.archive": 0,
                "smobiili.counters": 0,
                "recall_index": 0,
                "receipt_totals": 0,
                "card_links": 0,
            },
        )
    ]


def test_backdated_reopening_does_not_cover_a_purchase_before_the_break() -> None:
    # Versions are monotonic, effective_at need not be. The store was closed (v2, processed
    # after the purchase) and opened again (v3, effective before the purchase). The receipt
    # arrives after both: "a late receipt never leaks into a store its owner has closed in the
    # meantime (even if it was opened again later)".
    state = MemoryState()
    purchase = T0 + 45 * 60_000
    give(state, consent(version=1, effective_at=T0 - DAY_MS, **ALL_ON), T0 - DAY_MS)
    give(state, consent(version=2, effective_at=T0 + HOUR_MS), T0 + HOUR_MS)
    give(state, consent(version=3, effective_at=T0 + 30 * 60_000, **ALL_ON), T0 + 90 * 60_000)
    route(state, receipt(purchased_at=purchase), T0 + 2 * HOUR_MS)
    assert gated_keys(state) == []


def test_a_redelivered_erasure_is_not_audited_twice() -> None:
    # At-least-once delivery: the same consent tombstone after a crash. One erasure, one
    # audit record (the chaos suite saw a second one).
    state = MemoryState()
    first = run(personal_routing, state, "customer.consents", "CUST-0001", None, T0)
    again = run(personal_routing, state, "customer.consents", "CUST-0001", None, T0)
    assert [e.topic for e in first.emits] == ["audit.log"]
    assert again.emits == [] and again.events["duplicate"] == 1


def test_a_second_erasure_with_the_same_timestamp_still_erases_what_came_after_the_first() -> None:
    # Found by the consent fuzz test: erasure at T; a newer consent (a new customership) and a
    # receipt stored after it; a second tombstone that carries the same broker timestamp T.
    # It was taken for a redelivery of the first and skipped, so the e-receipt stayed in a
    # store its owner had been erased from.
    state = MemoryState()
    run(personal_routing, state, "customer.consents", CID, None, T0)
    give(state, consent(version=0, effective_at=T0 - DAY_MS, **ALL_ON), T0)
    route(state, receipt("R-0001", purchased_at=T0 + 1), T0 + 1)
    assert gated_keys(state) != []
    again = run(personal_routing, state, "customer.consents", CID, None, T0)
    assert gated_keys(state) == []
    assert f"consent|{CID}" not in state.data
    assert [e.topic for e in again.emits if e.topic == "audit.log"] == ["audit.log"]
    assert again.events["erasure"] == 1
