"""A member moves mid-month: each household's Bonus is exact to the cent, in any order.

Through the replay driver (the worker's own stage code). HH-A's main member spends 150.00 €
and member M 60.00 € (10 March) while in HH-A: 210.00 €, 1.5 %. M then moves to HH-B (15
March), where the main member spends 160.00 € and M 45.00 € (20 March): 205.00 €, 1.5 %.
Both households sit just above the 200 € edge, so a receipt in the wrong household moves
both across it. M's 10 March receipt arrives late, after the move (a till backlog), and the
result must not depend on that: the same records in purchase order give the same Bonus.
"""

from __future__ import annotations

from stream.settings import load_rules
from stream.tools.replay import Driver
from tests.unit.topo_helpers import GTIN_MILK, card, line, receipt, utc_ms
from topologies.queries.household_bonus import household_bonus_month

RULES = load_rules()
MAR = utc_ms(2024, 3, 1)
DAY = 86_400_000


def _receipt(rid: str, card_no: str, day: int, cents: int) -> dict:
    return receipt(
        rid,
        card_number=card_no,
        purchased_at=MAR + day * DAY + 12 * 3_600_000,
        lines=[line(1, GTIN_MILK, cents)],
        payment_method="CASH",
    )


def _events(late_receipt_after_move: bool) -> list[tuple[str, str, dict | None, int]]:
    a_main = card("CARD-A1", "CUST-A1", "HH-A", "MAIN_MEMBER")
    m_home = {**card("CARD-M", "CUST-M", "HH-A", "MEMBER"), "effective_at": MAR, "version": 1}
    b_main = card("CARD-B1", "CUST-B1", "HH-B", "MAIN_MEMBER")
    moved_at = MAR + 14 * DAY  # 15 March
    m_away = {**card("CARD-M", "CUST-M", "HH-B", "MEMBER"), "effective_at": moved_at, "version": 2}
    m_march_10 = _receipt("R-M-10", "CARD-M", 9, 6_000)
    events = [
        ("customer.cards", "CARD-A1", a_main, MAR),
        ("customer.cards", "CARD-M", m_home, MAR),
        ("customer.cards", "CARD-B1", b_main, MAR),
        _till(_receipt("R-A-5", "CARD-A1", 4, 15_000)),
    ]
    if not late_receipt_after_move:
        events.append(_till(m_march_10))
    events.append(("customer.cards", "CARD-M", m_away, moved_at))
    if late_receipt_after_move:  # the till's backlog: delivered a week after the purchase
        events.append(("pos.receipts", "CARD-M", m_march_10, MAR + 16 * DAY))
    events += [
        _till(_receipt("R-B-18", "CARD-B1", 17, 16_000)),
        _till(_receipt("R-M-20", "CARD-M", 19, 4_500)),
    ]
    return events


def _till(r: dict) -> tuple[str, str, dict, int]:
    """The receipt as the till sends it: on the broker a second after the purchase."""
    return ("pos.receipts", r["card_number"], r, r["purchased_at"] + 1_000)


def _bonus(late_receipt_after_move: bool) -> dict[str, tuple[int, int, int]]:
    driver = Driver(RULES)
    codec = driver.codec
    for topic, key, value, ts in _events(late_receipt_after_move):
        driver.feed(topic, codec.encode_key(key), codec.encode(topic, value), ts)
    state = driver.states["household_bonus"]
    out = {}
    for hh in ("HH-A", "HH-B"):
        b = household_bonus_month(state, hh, "2024-03")
        out[hh] = (b["eligible_cents"], b["rate_bp"], b["bonus_cents"])
    return out


def test_each_household_gets_the_purchases_made_while_the_member_was_in_it() -> None:
    expected = {
        "HH-A": (21_000, 150, 315),  # 210.00 € x 1.5 %
        "HH-B": (20_500, 150, 308),  # 205.00 € x 1.5 % = 3.075 €, rounded half up
    }
    assert _bonus(late_receipt_after_move=True) == expected
    assert _bonus(late_receipt_after_move=False) == expected
