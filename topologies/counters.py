"""S-mobiili counters (docs/domain.md §6): per purchaser and Helsinki calendar month.

Only line items that reached the purchaser's product-level store are counted, each joined
with its catalogue entry *as the entry is when the line is processed*. A line's contribution
is added to the month's counter once and never recomputed, so a catalogue entry that arrives
or changes later does not rewrite history: it applies to lines processed after it.

Sums (all integers; money in cents, weights and CO2e in grams):

=========================  ==============================================================
``food_cents``             ``amount_cents`` of food lines (``Product.food``)
``finnish_raw_cents``      food lines with origin ``FINNISH_RAW`` (made in Finland from
                           Finnish raw materials)
``finnish_made_cents``     food lines with origin ``FINNISH_MADE`` (made in Finland)
``foreign_cents``          food lines with origin ``FOREIGN``
``unknown_origin_cents``   food lines with origin ``UNKNOWN`` (or any other value); the
                           four origin sums always add up to ``food_cents``
``food_grams``             weight of food lines: ``KG`` lines give ``quantity_milli``
                           grams (1 kg = 1000 milli-units); ``PCS`` lines give
                           ``quantity_milli × net_weight_grams / 1000``
``vegetable_grams``        the part of ``food_grams`` whose product has ``vegetable``
                           set (vegetables, fruit, berries, mushrooms)
``co2e_grams``             Σ per food line ``grams × co2e_kg_per_kg`` (kg CO2e per kg =
                           g CO2e per g); lines without a factor add nothing
``unknown_gtin_lines``     lines whose GTIN the catalogue did not know: they count in no
                           other sum (their food-ness is unknown)
``line_count``             lines counted (including unknown GTINs and returned lines)
``receipt_count``          receipts counted (including returns)
=========================  ==============================================================

Non-food lines add to ``line_count`` only. A food ``PCS`` line without ``net_weight_grams``
has no weight: it counts in the euro sums, not in the gram sums (nor in ``co2e_grams``).

Returns are receipts with negative amounts and quantities: their lines subtract from the
sums of the month of the return, through the same formulas, using the catalogue as it is
when the return is processed. ``line_count``, ``unknown_gtin_lines`` and ``receipt_count``
count what was processed and never go down. A month's sums can therefore be negative (a
month with more returned than bought).

Rounding. Each line's grams and CO2e grams are rounded to whole grams *per line*, half away
from zero (``ROUND_HALF_UP`` in :mod:`decimal`; the factor is taken as its shortest decimal
form, so 0.7 is 7/10 exactly). Half away from zero is symmetric, so a return cancels its
purchase exactly. ``KG`` lines need no rounding (their grams are ``quantity_milli``), nor do
whole pieces.

Derived percentages (:func:`view`), floats with one decimal (half away from zero), ``None``
when the denominator is zero or negative:

- ``domestic_share_pct`` = (finnish_raw + finnish_made) / food_cents
- ``finnish_raw_share_pct``, ``finnish_made_share_pct``, ``foreign_share_pct``,
  ``unknown_origin_share_pct`` = that sum / food_cents
- ``vegetable_share_pct`` = vegetable_grams / food_grams

Returns can push a percentage outside 0-100 in an odd month; it is reported as computed.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any, cast

from topologies.record_types import Line, Product, SmobiiliCounters

ORIGIN_FIELDS = {
    "FINNISH_RAW": "finnish_raw_cents",
    "FINNISH_MADE": "finnish_made_cents",
    "FOREIGN": "foreign_cents",
}
UNKNOWN_ORIGIN_FIELD = "unknown_origin_cents"

# The sums a counter holds, in output order.
FIELDS = (
    "food_cents",
    "finnish_raw_cents",
    "finnish_made_cents",
    "foreign_cents",
    "unknown_origin_cents",
    "food_grams",
    "vegetable_grams",
    "co2e_grams",
    "unknown_gtin_lines",
    "line_count",
    "receipt_count",
)
# derived field -> (numerator fields, denominator field)
PERCENTAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "domestic_share_pct": (("finnish_raw_cents", "finnish_made_cents"), "food_cents"),
    "finnish_raw_share_pct": (("finnish_raw_cents",), "food_cents"),
    "finnish_made_share_pct": (("finnish_made_cents",), "food_cents"),
    "foreign_share_pct": (("foreign_cents",), "food_cents"),
    "unknown_origin_share_pct": (("unknown_origin_cents",), "food_cents"),
    "vegetable_share_pct": (("vegetable_grams",), "food_grams"),
}

_ONE = Decimal(1)


def round_half_up(x: Decimal) -> int:
    """Nearest integer, halves away from zero (so ``-x`` rounds to ``-round(x)``)."""
    return int(x.quantize(_ONE, rounding=ROUND_HALF_UP))


def line_grams(product: Product, line: Line) -> int | None:
    """The line's weight in grams, or ``None`` when it has none (a piece of unknown weight)."""
    unit = line["unit"]
    if unit == "KG":
        return int(line["quantity_milli"])
    if unit == "PCS":
        net = product.get("net_weight_grams")
        if net is None:
            return None
        q = int(line["quantity_milli"]) * int(net)
        if q % 1000 == 0:
            return q // 1000
        return round_half_up(Decimal(q) / 1000)
    return None  # validation rejects other units; a line without a known unit weighs nothing


def co2e_grams(grams: int, factor: float) -> int:
    """``grams × factor`` (kg CO2e per kg) in whole grams, rounded half away from zero."""
    return round_half_up(Decimal(grams) * Decimal(repr(float(factor))))


def line_contribution(product: Product | None, line: Line) -> dict[str, int]:
    """What one line adds to its month's counter: only the fields it changes.

    ``product`` is the catalogue entry as it is now (``None``: GTIN unknown).
    """
    if product is None:
        return {"line_count": 1, "unknown_gtin_lines": 1}
    out = {"line_count": 1}
    if not product["food"]:
        return out
    cents = int(line["amount_cents"])
    out["food_cents"] = cents
    out[ORIGIN_FIELDS.get(product["origin"], UNKNOWN_ORIGIN_FIELD)] = cents
    grams = line_grams(product, line)
    if grams is not None:
        out["food_grams"] = grams
        if product["vegetable"]:
            out["vegetable_grams"] = grams
        factor = product.get("co2e_kg_per_kg")
        if factor is not None:
            out["co2e_grams"] = co2e_grams(grams, factor)
    return out


def empty() -> dict[str, Any]:
    """A counter with every sum 0."""
    return dict.fromkeys(FIELDS, 0)


def add(counter: dict[str, Any], contribution: dict[str, int]) -> dict[str, Any]:
    """``counter`` with ``contribution`` added (in place; also returned). Other keys are kept."""
    for name, n in contribution.items():
        counter[name] = counter.get(name, 0) + n
    return counter


def receipt_contribution(products: list[Product | None], lines: list[Line]) -> dict[str, int]:
    """One receipt's contribution: ``receipt_count`` 1 and each line with its product."""
    total: dict[str, int] = {"receipt_count": 1}
    for product, line in zip(products, lines, strict=True):
        add(total, line_contribution(product, line))
    return total


def pct(numerator: int, denominator: int) -> float | None:
    """``100 × numerator / denominator`` with one decimal, halves away from zero."""
    if denominator <= 0:
        return None
    tenths = round_half_up(Decimal(1000 * numerator) / Decimal(denominator))
    return tenths / 10


def view(counter: dict[str, Any]) -> dict[str, Any]:
    """The public figures of a stored counter: every sum of :data:`FIELDS` and the percentages.

    Internal bookkeeping stored beside the sums (``last_receipt_id``, ``updated_at``) is left
    out; a missing sum reads as 0.
    """
    out: dict[str, Any] = {name: int(counter.get(name, 0)) for name in FIELDS}
    for name, (numerators, denominator) in PERCENTAGES.items():
        out[name] = pct(sum(out[n] for n in numerators), out[denominator])
    return out


def record(customer_id: str, month: str, counter: dict[str, Any]) -> SmobiiliCounters:
    """The ``smobiili.counters`` record of a stored counter (``SmobiiliCounters``)."""
    out = {
        "customer_id": customer_id,
        "month": month,
        "removed": False,
        **view(counter),
        "updated_at": counter["updated_at"],
    }
    return cast("SmobiiliCounters", out)


def removal_record(customer_id: str, month: str, at_ms: int) -> SmobiiliCounters:
    """The record that says a month's counters were deleted: every sum 0, every share null."""
    out = {
        "customer_id": customer_id,
        "month": month,
        "removed": True,
        **view(empty()),
        "updated_at": at_ms,
    }
    return cast("SmobiiliCounters", out)
