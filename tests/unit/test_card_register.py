"""The card register in time (docs/domain.md §1): a receipt joins the link of its purchase time.

Each rule of the Decision, through stage 1 (card_join): a move or a role change before and
after a purchase, a closure before and after, out-of-order versions, a first record arriving
after its receipts, records without the new fields (effective at their broker timestamp,
ordered by arrival), and the history retention. The finding behind it: a receipt whose card
was closed 4.8 s after the purchase went anonymous when a restart's backlog processed it
after the closure, and its household lost the Bonus that replay gave.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.unit.topo_helpers import DAY_MS, HOUR_MS, RULES, T0, card, receipt, run
from topologies import card_join, card_register
from topologies.state import MemoryState


def versioned(c: dict, *, at: int | None = None, version: int | None = None) -> dict:
    return {**c, "effective_at": at, "version": version}


def joined(state: MemoryState, r: dict, now: int) -> dict | None:
    """The card link the receipt was forwarded with; None if it went anonymous."""
    result = run(card_join, state, "pos.receipts", r["card_number"], r, now)
    assert result.rejects == []
    ident = [e for e in result.emits if e.topic == "receipts.identified"]
    return ident[0].value["card"] if ident else None


def feed_card(state: MemoryState, key: str, value: dict | None, now: int):
    return run(card_join, state, "customer.cards", key, value, now)


HOME = card("CARD-1", "CUST-1", "HH-HOME", "MEMBER")
AWAY = card("CARD-1", "CUST-1", "HH-AWAY", "MAIN_MEMBER")


def test_a_move_after_the_purchase_does_not_move_it() -> None:
    state = MemoryState()
    feed_card(state, "CARD-1", versioned(HOME, at=T0 - DAY_MS, version=1), T0 - DAY_MS)
    feed_card(state, "CARD-1", versioned(AWAY, at=T0 + HOUR_MS, version=2), T0 + HOUR_MS)
    # The receipt is processed after the move (a backlog): it still accrues at home.
    link = joined(state, receipt("R-1", card_number="CARD-1", purchased_at=T0), T0 + 2 * HOUR_MS)
    assert link is not None and (link["household_id"], link["role"]) == ("HH-HOME", "MEMBER")


def test_a_move_before_the_purchase_takes_it_along() -> None:
    state = MemoryState()
    feed_card(state, "CARD-1", versioned(HOME, at=T0 - DAY_MS, version=1), T0 - DAY_MS)
    feed_card(state, "CARD-1", versioned(AWAY, at=T0 - HOUR_MS, version=2), T0 - HOUR_MS)
    link = joined(state, receipt("R-1", card_number="CARD-1", purchased_at=T0), T0)
    assert link is not None and (link["household_id"], link["role"]) == ("HH-AWAY", "MAIN_MEMBER")


def test_a_closure_after_the_purchase_keeps_it_in_the_household() -> None:
    state = MemoryState()
    feed_card(state, "CARD-1", HOME, T0 - DAY_MS)
    feed_card(state, "CARD-1", None, T0 + 4_800)  # closed 4.8 s after the purchase
    link = joined(state, receipt("R-1", card_number="CARD-1", purchased_at=T0), T0 + HOUR_MS)
    assert link is not None and link["household_id"] == "HH-HOME"


def test_a_purchase_after_the_closure_is_anonymous() -> None:
    state = MemoryState()
    feed_card(state, "CARD-1", HOME, T0 - DAY_MS)
    feed_card(state, "CARD-1", None, T0 - 1)
    assert joined(state, receipt("R-1", card_number="CARD-1", purchased_at=T0), T0) is None


def test_a_card_closed_and_reopened_identifies_again_only_while_open() -> None:
    state = MemoryState()
    feed_card(state, "CARD-1", HOME, T0 - DAY_MS)
    feed_card(state, "CARD-1", None, T0 - 2 * HOUR_MS)
    feed_card(state, "CARD-1", AWAY, T0 - HOUR_MS)
    closed_then = receipt("R-1", card_number="CARD-1", purchased_at=T0 - 90 * 60_000)
    assert joined(state, closed_then, T0) is None
    link = joined(state, receipt("R-2", card_number="CARD-1", purchased_at=T0), T0)
    assert link is not None and link["household_id"] == "HH-AWAY"


def test_a_lower_version_arriving_late_is_ignored() -> None:
    state = MemoryState()
    feed_card(state, "CARD-1", versioned(AWAY, at=T0 - HOUR_MS, version=5), T0 - HOUR_MS)
    result = feed_card(state, "CARD-1", versioned(HOME, at=T0 - DAY_MS, version=4), T0)
    assert result.events["stale_card"] == 1
    # Had version 4 been accepted, a purchase before the move would join HH-HOME.
    link = joined(state, receipt("R-1", card_number="CARD-1", purchased_at=T0 - 2 * DAY_MS), T0)
    assert link is not None and link["household_id"] == "HH-AWAY"
    # The same version again (a redelivery) changes nothing either.
    again = feed_card(state, "CARD-1", versioned(AWAY, at=T0 - HOUR_MS, version=5), T0)
    assert again.events["stale_card"] == 1


def test_versions_order_records_whatever_their_effective_times() -> None:
    # Version 2 says the card was HOME from T0-2h; version 3 (a correction, arriving later)
    # says AWAY from T0-3h. Both are accepted: AWAY holds T0-3h..T0-2h, HOME from T0-2h.
    state = MemoryState()
    feed_card(state, "CARD-1", versioned(HOME, at=T0 - 2 * HOUR_MS, version=2), T0 - 2 * HOUR_MS)
    feed_card(state, "CARD-1", versioned(AWAY, at=T0 - 3 * HOUR_MS, version=3), T0)
    early = receipt("R-1", card_number="CARD-1", purchased_at=T0 - 150 * 60_000)
    late = receipt("R-2", card_number="CARD-1", purchased_at=T0 - HOUR_MS)
    assert joined(state, early, T0)["household_id"] == "HH-AWAY"  # type: ignore[index]
    assert joined(state, late, T0)["household_id"] == "HH-HOME"  # type: ignore[index]


def test_the_first_record_covers_all_time_before_it() -> None:
    # Receipts before the card is known are parked, then joined when it arrives, even
    # though they were bought before its effective time.
    state = MemoryState()
    early = receipt("R-1", card_number="CARD-1", purchased_at=T0 - DAY_MS)
    run(card_join, state, "pos.receipts", "CARD-1", early, T0 - DAY_MS)
    assert list(state.items("park|"))
    result = feed_card(state, "CARD-1", versioned(HOME, at=T0, version=1), T0)
    [ident] = [e for e in result.emits if e.topic == "receipts.identified"]
    assert ident.value["card"]["household_id"] == "HH-HOME"
    assert list(state.items("park|")) == []


def test_the_first_known_record_covers_earlier_purchases_even_when_it_is_a_move() -> None:
    # The card's first record arrives after a move already happened: the receipt parked
    # before is joined with the link of its purchase time, not the newest one.
    state = MemoryState()
    r = receipt("R-1", card_number="CARD-1", purchased_at=T0)
    run(card_join, state, "pos.receipts", "CARD-1", r, T0)
    feed_card(state, "CARD-1", versioned(AWAY, at=T0 + HOUR_MS, version=2), T0 + 2 * HOUR_MS)
    # released with the only known link (first record covers all time before)
    assert not list(state.items("park|"))
    # a receipt bought before the move, processed now: the first record covers it
    link = joined(state, receipt("R-2", card_number="CARD-1", purchased_at=T0), T0 + 3 * HOUR_MS)
    assert link is not None and link["household_id"] == "HH-AWAY"


def test_a_role_change_applies_from_its_time() -> None:
    main = card("CARD-1", "CUST-1", "HH-HOME", "MAIN_MEMBER")
    state = MemoryState()
    feed_card(state, "CARD-1", versioned(HOME, at=T0 - DAY_MS, version=1), T0 - DAY_MS)
    feed_card(state, "CARD-1", versioned(main, at=T0, version=2), T0)
    before = receipt("R-1", card_number="CARD-1", purchased_at=T0 - 1)
    after = receipt("R-2", card_number="CARD-1", purchased_at=T0)
    assert joined(state, before, T0 + HOUR_MS)["role"] == "MEMBER"  # type: ignore[index]
    assert joined(state, after, T0 + HOUR_MS)["role"] == "MAIN_MEMBER"  # type: ignore[index]


def test_records_without_the_new_fields_hold_from_their_broker_time_in_arrival_order() -> None:
    state = MemoryState()
    feed_card(state, "CARD-1", HOME, T0 - DAY_MS)  # v1 record: no effective_at, no version
    feed_card(state, "CARD-1", AWAY, T0)
    assert (
        joined(state, receipt("R-1", card_number="CARD-1", purchased_at=T0 - 1), T0)["household_id"]
        == "HH-HOME"
    )
    assert (
        joined(state, receipt("R-2", card_number="CARD-1", purchased_at=T0), T0)["household_id"]
        == "HH-AWAY"
    )
    # A redelivered unversioned record (same broker time) is the same entry, not a new one.
    feed_card(state, "CARD-1", AWAY, T0)
    assert len(state.get("card|CARD-1")["h"]) == 2


def test_processing_order_does_not_change_the_join() -> None:
    # The finding: the same records, the receipt processed before or after the closure.
    r = receipt("R-1", card_number="CARD-1", purchased_at=T0)
    first = MemoryState()
    feed_card(first, "CARD-1", HOME, T0 - DAY_MS)
    before = joined(first, r, T0 + 1_000)
    second = MemoryState()
    feed_card(second, "CARD-1", HOME, T0 - DAY_MS)
    feed_card(second, "CARD-1", None, T0 + 4_800)
    after = joined(second, r, T0 + 60_000)
    assert before == after and before is not None


def test_history_older_than_the_retention_goes_and_the_oldest_kept_covers_before() -> None:
    rules = RULES
    keep = rules.card_history_retention_ms
    state = MemoryState()
    feed_card(state, "CARD-1", versioned(HOME, at=T0, version=1), T0)
    feed_card(state, "CARD-1", versioned(AWAY, at=T0 + DAY_MS, version=2), T0 + DAY_MS)
    assert len(state.get("card|CARD-1")["h"]) == 2
    # A later change, after HOME stopped holding longer than the retention ago.
    later = T0 + DAY_MS + keep + 1
    feed_card(state, "CARD-1", versioned(HOME, at=later, version=3), later)
    history = state.get("card|CARD-1")["h"]
    assert [e[1]["household_id"] for e in history] == ["HH-AWAY", "HH-HOME"]


def test_retention_shorter_than_lateness_plus_parking_is_refused() -> None:
    with pytest.raises(ValueError, match="history_retention"):
        dataclasses.replace(RULES, card_history_retention_ms=RULES.max_lateness_ms)


def test_state_written_before_the_history_is_read_as_one_entry() -> None:
    state = MemoryState()
    state.set("card|CARD-1", {k: HOME[k] for k in HOME})
    state.set("card|CARD-2", {"closed": True})
    link = joined(state, receipt("R-1", card_number="CARD-1", purchased_at=T0), T0)
    assert link is not None and link["household_id"] == "HH-HOME"
    assert joined(state, receipt("R-2", card_number="CARD-2", purchased_at=T0), T0) is None
    feed_card(state, "CARD-1", AWAY, T0 + HOUR_MS)
    assert card_register.periods(state.get("card|CARD-1")) == [
        {**HOME, "from": 0, "to": T0 + HOUR_MS},
        {**AWAY, "from": T0 + HOUR_MS, "to": None},
    ]


# --- the register for readers keyed by person and by household ------------------------------


def _drive(records: list[tuple[str, str, dict | None, int]]):  # type: ignore[no-untyped-def]
    from stream.tools.replay import Driver

    driver = Driver(RULES)
    codec = driver.codec
    for topic, key, value, ts in records:
        driver.feed(topic, codec.encode_key(key), codec.encode(topic, value), ts)
    return driver


def test_a_move_reaches_the_person_and_both_households() -> None:
    from topologies import household_bonus, personal_routing
    from topologies.queries import household_bonus as bonus_queries
    from topologies.queries import personal as personal_queries

    driver = _drive(
        [
            ("customer.cards", "CARD-1", versioned(HOME, at=T0 - DAY_MS, version=1), T0 - DAY_MS),
            ("customer.cards", "CARD-1", versioned(AWAY, at=T0, version=2), T0),
        ]
    )
    personal = driver.states[personal_routing.STAGE]
    assert personal_queries.register_history(personal, "CUST-1") == [
        {"card_number": "CARD-1", "household_id": "HH-HOME", "role": "MEMBER",
         "from": T0 - DAY_MS, "to": T0},
        {"card_number": "CARD-1", "household_id": "HH-AWAY", "role": "MAIN_MEMBER",
         "from": T0, "to": None},
    ]  # fmt: skip
    assert personal_queries.register_now(personal, "CUST-1")["household_id"] == "HH-AWAY"  # type: ignore[index]
    bonus = driver.states[household_bonus.STAGE]
    assert bonus_queries.register_members(bonus, "HH-HOME") == {}
    assert bonus_queries.register_members(bonus, "HH-AWAY") == {"CUST-1": "MAIN_MEMBER"}


def test_a_closure_takes_the_person_out_of_the_household_now() -> None:
    from topologies import household_bonus, personal_routing
    from topologies.queries import household_bonus as bonus_queries
    from topologies.queries import personal as personal_queries

    driver = _drive(
        [
            ("customer.cards", "CARD-1", HOME, T0 - DAY_MS),
            ("customer.cards", "CARD-1", None, T0),
        ]
    )
    assert bonus_queries.register_members(driver.states[household_bonus.STAGE], "HH-HOME") == {}
    personal = driver.states[personal_routing.STAGE]
    assert personal_queries.register_now(personal, "CUST-1") is None
    [period] = personal_queries.register_history(personal, "CUST-1")
    assert (period["from"], period["to"]) == (T0 - DAY_MS, T0)


def test_an_erasure_deletes_the_links_and_old_links_do_not_come_back() -> None:
    from topologies import personal_routing
    from topologies.queries import personal as personal_queries

    erase = ("customer.consents", "CUST-1", None, T0 + HOUR_MS)
    link = ("customer.cards", "CARD-1", HOME, T0 - DAY_MS)
    driver = _drive([link, erase, ("customer.cards", "CARD-1", None, T0 + 2 * HOUR_MS)])
    personal = driver.states[personal_routing.STAGE]
    assert personal_queries.register_history(personal, "CUST-1") == []
    assert list(personal.items("reg|")) == []


def test_a_redelivered_card_record_sends_the_register_again() -> None:
    # A crash after the card's state but before its propagation reached the broker: the
    # redelivery is stale (same version) but sends the links again.
    state = MemoryState()
    v1 = versioned(HOME, at=T0, version=1)
    first = run(card_join, state, "customer.cards", "CARD-1", v1, T0)
    again = run(card_join, state, "customer.cards", "CARD-1", v1, T0)
    assert again.events["stale_card"] == 1
    assert [(e.topic, e.key, e.value) for e in again.emits] == [
        (e.topic, e.key, e.value) for e in first.emits
    ]
    assert {e.topic for e in first.emits} == {"register.people", "register.households"}
