"""The Bonus arithmetic (docs/domain.md §4): tiers, rounding, the payment benefit, month close.

Every number comes from ``[bonus]`` in ``config/pipeline.toml`` (:class:`topologies.rules.Rules`).
The Bonus rate is the tier of the *whole* month total and the Bonus is rounded once, on the
month total, in integer arithmetic: no float ever touches money.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from topologies.record_types import ReceiptTotal
from topologies.rules import Rules

BP_DENOMINATOR = 10_000


def rate_bp(tiers: tuple[tuple[int, int], ...], eligible_cents: int) -> int:
    """Rate of the highest tier whose threshold the month reaches; a negative month is 0 €."""
    amount = max(eligible_cents, 0)
    rate = 0
    for threshold, bp in tiers:
        if amount < threshold:
            break
        rate = bp
    return rate


def apply_bp(cents: int, bp: int) -> int:
    """``round_half_up(max(cents, 0) * bp / 10000)`` in integers (no float ever touches money)."""
    return (max(cents, 0) * bp + BP_DENOMINATOR // 2) // BP_DENOMINATOR


def earns_payment_benefit(rules: Rules, value: ReceiptTotal) -> bool:
    """Whether a receipt earns the payment benefit.

    Paid with the S-Etukortti payment function at S Group's own outlets, not at partners.
    """
    return (
        value["payment_method"] == rules.payment_benefit_method
        and value["chain"] not in rules.partner_chains
    )


def close_at(rules: Rules, month: str) -> int:
    """Epoch ms at which ``month`` closes: 00:00 local time on the close day of the next month."""
    return _close_at(rules.zone, rules.bonus_close_day, month)


@lru_cache(maxsize=4096)
def _close_at(zone: str, close_day: int, month: str) -> int:
    year, mon = int(month[:4]), int(month[5:7])
    year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    # An aware local midnight: zoneinfo picks the offset in force that day (UTC+2 or UTC+3).
    local_midnight = datetime(year, mon, close_day, tzinfo=ZoneInfo(zone))
    return int(local_midnight.timestamp()) * 1000


def next_month(month: str) -> str:
    """The calendar month after ``month`` (``YYYY-MM``)."""
    y, m = int(month[:4]), int(month[5:7])
    return f"{y + m // 12:04d}-{m % 12 + 1:02d}"
