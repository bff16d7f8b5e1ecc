"""Every cell of docs/domain.md §5's visibility table, and the household view built from it."""

from __future__ import annotations

import json

import pytest

from topologies import access
from topologies.access import Viewer

ANNA = Viewer(access.CUSTOMER, "C-ANNA", "HH-1", access.MAIN)  # main member of HH-1
BERT = Viewer(access.CUSTOMER, "C-BERT", "HH-1", access.MEMBER)  # other member of HH-1
OLLI = Viewer(access.CUSTOMER, "C-OLLI", "HH-2", access.MAIN)  # main member elsewhere
STAFF = Viewer(access.STAFF, "staff-7")

PERSONAL = sorted(access.PERSONAL_KINDS)
HOUSEHOLD = sorted(access.HOUSEHOLD_KINDS)


# --- the purchaser: own product-level purchases and counters; own receipt totals ----------


@pytest.mark.parametrize("kind", PERSONAL)
@pytest.mark.parametrize("viewer", [ANNA, BERT, OLLI], ids=["main", "member", "outsider"])
def test_a_person_sees_their_own_personal_data(viewer: Viewer, kind: str) -> None:
    assert access.may_see(viewer, kind, customer_id=viewer.subject)


@pytest.mark.parametrize("kind", PERSONAL)
@pytest.mark.parametrize(
    "viewer,subject",
    [(ANNA, "C-BERT"), (BERT, "C-ANNA"), (OLLI, "C-ANNA"), (ANNA, None)],
    ids=["main->member", "member->main", "outsider->main", "no-subject"],
)
def test_nobody_sees_another_persons_personal_data(
    viewer: Viewer, subject: str | None, kind: str
) -> None:
    # Product-level data is shown only to the person who made the purchase, not even to the
    # main member of the same household; receipt totals of others go through the household.
    assert not access.may_see(viewer, kind, customer_id=subject)


# --- main member: members, all household purchases at total level, household Bonus -------


@pytest.mark.parametrize("kind", HOUSEHOLD)
def test_the_main_member_sees_every_household_view(kind: str) -> None:
    assert access.may_see(ANNA, kind, household_id="HH-1")


# --- other member: who the main member is, joint accrual, chain summary; not the rest ------


@pytest.mark.parametrize(
    "kind,allowed",
    [
        (access.WHO_IS_MAIN, True),
        (access.JOINT_BONUS, True),
        (access.CHAIN_SUMMARY, True),
        (access.HOUSEHOLD_MEMBERS, False),
        (access.HOUSEHOLD_RECEIPTS, False),
        (access.HOUSEHOLD_BONUS, False),
    ],
)
def test_another_member_sees_the_joint_figures_only(kind: str, allowed: bool) -> None:
    assert access.may_see(BERT, kind, household_id="HH-1") is allowed


# --- anyone else: nothing -------------------------------------------------------------------


@pytest.mark.parametrize("kind", HOUSEHOLD)
def test_anyone_else_sees_nothing_of_a_household(kind: str) -> None:
    assert not access.may_see(OLLI, kind, household_id="HH-1")
    assert not access.may_see(ANNA, kind, household_id=None)
    assert not access.may_see(STAFF, kind, household_id="HH-1", purpose="customer_request")


def test_an_unknown_viewer_kind_or_kind_of_data_sees_nothing() -> None:
    robot = Viewer("robot", "C-ANNA", "HH-1", access.MAIN)
    assert not access.may_see(robot, access.COUNTERS, customer_id="C-ANNA")
    assert not access.may_see(ANNA, "everything", customer_id="C-ANNA", household_id="HH-1")
    odd_role = Viewer(access.CUSTOMER, "C-X", "HH-1", "owner")
    assert not access.may_see(odd_role, access.JOINT_BONUS, household_id="HH-1")


# --- staff: personal data for a stated purpose only ------------------------------------------


@pytest.mark.parametrize("kind", PERSONAL)
@pytest.mark.parametrize("purpose", sorted(access.STAFF_PURPOSES))
def test_staff_read_a_person_for_a_stated_purpose(kind: str, purpose: str) -> None:
    assert access.may_see(STAFF, kind, customer_id="C-ANNA", purpose=purpose)


@pytest.mark.parametrize("purpose", [None, "", "curiosity", "marketing"])
def test_staff_without_an_allowed_purpose_see_nothing(purpose: str | None) -> None:
    for kind in PERSONAL:
        assert not access.may_see(STAFF, kind, customer_id="C-ANNA", purpose=purpose)


def test_a_customer_token_cannot_act_as_staff() -> None:
    assert not access.may_see(
        ANNA, access.EXTRACT, customer_id="C-BERT", purpose="customer_request"
    )


# --- the household response -----------------------------------------------------------------

BONUS = {
    "household_id": "HH-1",
    "month": "2026-11",
    "eligible_cents": 30_000,
    "rate_bp": 200,
    "bonus_cents": 600,
    "payment_benefit_eligible_cents": 10_000,
    "payment_benefit_cents": 50,
    "receipt_count": 3,
    "members": {"C-ANNA": 20_000, "C-BERT": 10_000},
    "closed": False,
    "statements": [],
}
RECEIPTS = [
    {"receipt_id": "R1", "chain": "PRISMA", "total_cents": 12_000, "bonus_eligible_cents": 12_000},
    {"receipt_id": "R2", "chain": "ALEPA", "total_cents": 8_000, "bonus_eligible_cents": 8_000},
    {"receipt_id": "R3", "chain": "PRISMA", "total_cents": 10_500, "bonus_eligible_cents": 10_000},
]
MEMBERS = {"C-ANNA": "MAIN_MEMBER", "C-BERT": "MEMBER"}


def test_the_main_member_view_has_members_receipts_and_full_figures() -> None:
    view = access.household_view(ANNA, BONUS, RECEIPTS, MEMBERS)
    assert view["bonus"] == BONUS
    assert view["receipts"] == RECEIPTS
    assert view["members"] == [
        {"customer_id": "C-ANNA", "role": "MAIN_MEMBER"},
        {"customer_id": "C-BERT", "role": "MEMBER"},
    ]
    assert view["main_member"] == "C-ANNA"


def test_a_member_view_has_the_joint_figure_the_main_member_and_chains_only() -> None:
    view = access.household_view(BERT, BONUS, RECEIPTS, MEMBERS)
    assert set(view) == {"household_id", "month", "main_member", "joint", "chains"}
    assert view["main_member"] == "C-ANNA"
    assert view["joint"] == {
        "eligible_cents": 30_000,
        "rate_bp": 200,
        "bonus_cents": 600,
        "receipt_count": 3,
    }
    assert view["chains"] == [
        {"chain": "ALEPA", "receipt_count": 1, "total_cents": 8_000, "eligible_cents": 8_000},
        {"chain": "PRISMA", "receipt_count": 2, "total_cents": 22_500, "eligible_cents": 22_000},
    ]
    # Nothing that names another member's purchases or sums.
    assert "C-BERT" not in repr(view) and "R1" not in repr(view)


def test_an_outsider_view_is_empty_of_figures() -> None:
    view = access.household_view(OLLI, BONUS, RECEIPTS, MEMBERS)
    assert set(view) == {"household_id", "month"}


def test_the_joint_bonus_is_one_projection_for_the_response_and_the_live_feed() -> None:
    from stream.serve.live_stream import sse

    joint = {"eligible_cents": 30_000, "rate_bp": 200, "bonus_cents": 600, "receipt_count": 3}
    assert access.joint_bonus(BONUS) == joint
    assert access.household_view(BERT, BONUS, RECEIPTS, MEMBERS)["joint"] == joint
    assert access.household_view(ANNA, BONUS, RECEIPTS, MEMBERS)["joint"] == joint
    # The live feed's bonus event (both roles listen): the same figures, nothing finer.
    event = sse("bonus", BONUS).decode()
    assert event.startswith("event: bonus\ndata: ") and event.endswith("\n\n")
    data = json.loads(event.split("data: ", 1)[1])
    assert data == {"household_id": "HH-1", "month": "2026-11", "joint": joint}
    # Counter events go through as they are.
    counters = {"customer_id": "C-ANNA", "month": "2026-11", "food_cents": 450}
    assert json.loads(sse("counters", counters).decode().split("data: ", 1)[1]) == counters
