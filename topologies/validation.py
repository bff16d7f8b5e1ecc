"""Rule checks on a decoded receipt; a failure names a bounded reason code for the dead letter.

Schema-level problems are caught by the codec; these are the domain rules the schema cannot
express (docs/domain.md §1, §4 and the receipt contract, §9.1).
"""

from __future__ import annotations

from topologies.record_types import Receipt
from topologies.records import Reject
from topologies.rules import Rules

UNITS = frozenset({"PCS", "KG"})
# Beyond any till: 2100-01-01 UTC (a broker clock that far ahead is itself broken), and
# 100 million euros or a million units on one line -- sums of such values could overflow
# the 64-bit integers of the outputs.
LATEST_PURCHASE_MS = 4_102_444_800_000
MAX_LINE_CENTS = 10_000_000_000
MAX_QUANTITY_MILLI = 1_000_000_000
PAYMENT_METHODS = frozenset({"S_ETUKORTTI_PAYMENT", "OTHER_CARD", "CASH", "MOBILE", "GIFT_CARD"})


def check_receipt(
    receipt: Receipt, *, product_level: bool, now_ms: int, rules: Rules
) -> Reject | None:
    """The first rule a receipt breaks, or None. ``now_ms`` is the record's broker timestamp."""
    lines = receipt["lines"]
    # Limits first: they bound the work (and the output size) of everything after them.
    if len(lines) > rules.max_lines_per_receipt:
        return Reject(
            "too_many_lines", f"{len(lines)} line items > limit {rules.max_lines_per_receipt}"
        )
    purchased_at = receipt["purchased_at"]
    if purchased_at >= LATEST_PURCHASE_MS:
        return Reject("implausible_time", "purchased_at is after 2100-01-01")
    if purchased_at < now_ms - rules.max_lateness_ms:
        return Reject(
            "implausible_time",
            f"purchased_at is {(now_ms - purchased_at) // 1000} s before the broker timestamp "
            f"(limit {rules.max_lateness_ms // 1000} s)",
        )
    if purchased_at > now_ms + rules.max_clock_skew_ms:
        return Reject(
            "implausible_time",
            f"purchased_at is {(purchased_at - now_ms) // 1000} s after the broker timestamp "
            f"(limit {rules.max_clock_skew_ms // 1000} s)",
        )
    if not receipt["receipt_id"]:
        return Reject("missing_receipt_id", "receipt_id is empty")
    if not receipt["store_id"]:
        return Reject("missing_store_id", "store_id is empty")
    for field, text in (
        ("receipt_id", receipt["receipt_id"]),
        ("store_id", receipt["store_id"]),
        ("card_number", receipt.get("card_number")),
    ):
        if "|" in (text or ""):
            # "|" separates state-key segments (topologies/state.py).
            return Reject("bad_identifier", f"{field} must not contain '|'")
    if abs(receipt["total_cents"]) > MAX_LINE_CENTS * max(1, len(lines)) or abs(
        receipt["bonus_eligible_cents"]
    ) > MAX_LINE_CENTS * max(1, len(lines)):
        return Reject("implausible_amount", "receipt amount beyond any till")
    if receipt["payment_method"] not in PAYMENT_METHODS:
        return Reject("bad_payment_method", f"payment_method {receipt['payment_method']!r}")
    total = receipt["total_cents"]
    eligible = receipt["bonus_eligible_cents"]
    # Eligible is a part of the total, with the same sign (returns are negative throughout).
    if (total >= 0 and not 0 <= eligible <= total) or (total < 0 and not total <= eligible <= 0):
        return Reject("eligible_exceeds_total", f"bonus_eligible_cents {eligible} vs total {total}")
    if total < 0 and not receipt.get("original_receipt_id"):
        return Reject("return_without_original", "negative total without original_receipt_id")
    if receipt["purchased_at"] <= 0:
        return Reject("bad_timestamp", "purchased_at must be positive epoch millis")
    # Only product-level chains are held to their lines: a total-only till's stray lines are
    # dropped unread (docs/domain.md §1), so they cannot make the receipt (and its Bonus) invalid.
    if not product_level:
        return None
    seen: set[int] = set()
    line_sum = 0
    eligible_sum = 0
    for line in lines:
        if line["unit"] not in UNITS:
            return Reject("bad_unit", f"line {line['line_no']}: unit {line['unit']!r}")
        if line["line_no"] in seen:
            return Reject("duplicate_line_no", f"line_no {line['line_no']} repeats")
        seen.add(line["line_no"])
        if not line["gtin"]:
            return Reject("missing_gtin", f"line {line['line_no']}: empty gtin")
        quantity, amount = line["quantity_milli"], line["amount_cents"]
        if abs(amount) > MAX_LINE_CENTS or abs(quantity) > MAX_QUANTITY_MILLI:
            return Reject("implausible_amount", f"line {line['line_no']}: beyond any till")
        if quantity < 0 < amount or amount < 0 < quantity:
            # A sale is positive in both, a returned line negative in both; mixed signs
            # would let a till turn a return into Bonus (or hide a sale from it).
            return Reject(
                "sign_mismatch",
                f"line {line['line_no']}: quantity and amount have opposite signs",
            )
        line_sum += line["amount_cents"]
        if line["bonus_eligible"]:
            eligible_sum += line["amount_cents"]
    if line_sum != total:
        return Reject("lines_total_mismatch", f"lines sum {line_sum} != total_cents {total}")
    if eligible_sum != eligible:
        return Reject(
            "lines_eligible_mismatch",
            f"eligible lines sum {eligible_sum} != bonus_eligible_cents {eligible}",
        )
    return None
