"""The product catalogue table: GTIN -> product, from the compacted ``product.catalog`` topic.

Every worker holds the whole catalogue (a global table) because receipts are partitioned by
card and customer, never by GTIN. A catalogue entry applies from when it is processed on;
it never rewrites what was already routed (docs/domain.md §6).
"""

from __future__ import annotations

import math
from typing import Any, cast

from topologies.context import CatalogLookup, Context
from topologies.record_types import GroupTotal, Line, Product
from topologies.records import Reject, StepResult
from topologies.state import State

STAGE = "catalog"
INPUTS = ("product.catalog",)
UNKNOWN_GROUP = "UNKNOWN"
# Bounds of a plausible catalogue entry. The S-mobiili counters multiply a line's grams by
# the CO2e factor and sum them into Avro longs (topologies/counters.py), so a NaN or infinite
# factor crashed the counting step, and a huge factor or weight overflowed the counter record
# (found by tests/functional/test_fuzz_inputs.py). Real factors are tens of kg CO2e per kg
# (beef ~60); a piece sold by the co-op's hardware chains weighs at most a few tonnes.
MAX_CO2E_KG_PER_KG = 1_000.0
MAX_NET_WEIGHT_GRAMS = 10_000_000


def key(gtin: str) -> str:
    """State key of a catalogue entry."""
    return f"product|{gtin}"


def step(
    ctx: Context, state: State, topic: str, rkey: str | None, value: dict[str, Any] | None
) -> StepResult:
    """Keep (or delete) one catalogue entry, if it is plausible."""
    result = StepResult()
    if rkey is None:
        result.rejects.append(Reject("missing_key", "product.catalog record without a GTIN key"))
        return result
    if value is None:
        state.delete(key(rkey))
        result.events["catalog_deleted"] += 1
        return result
    if value["gtin"] != rkey:
        result.rejects.append(Reject("key_mismatch", "record key is not the record's gtin"))
        return result
    problem = check_product(cast("Product", value))
    if problem is not None:
        # The entry held so far (if any) stays: an implausible update must not erase it.
        result.rejects.append(problem)
        return result
    state.set(key(rkey), value)
    result.events["catalog_updated"] += 1
    return result


def check_product(product: Product) -> Reject | None:
    """The numbers a catalogue entry brings into the counters' arithmetic, checked."""
    factor = product.get("co2e_kg_per_kg")
    if factor is not None and not (math.isfinite(factor) and 0 <= factor <= MAX_CO2E_KG_PER_KG):
        return Reject(
            "bad_co2e_factor", f"co2e_kg_per_kg {factor!r} not in 0..{MAX_CO2E_KG_PER_KG}"
        )
    weight = product.get("net_weight_grams")
    if weight is not None and not 0 <= weight <= MAX_NET_WEIGHT_GRAMS:
        return Reject(
            "bad_net_weight", f"net_weight_grams {weight} not in 0..{MAX_NET_WEIGHT_GRAMS}"
        )
    return None


def lookup_in(state: State) -> CatalogLookup:
    """The catalogue lookup over the catalogue stage's state."""

    def lookup(gtin: str) -> Product | None:
        product: Product | None = state.get(key(gtin))
        return product

    return lookup


def product_group(ctx: Context, gtin: str) -> str:
    """The GTIN's product group in the catalogue now (``UNKNOWN`` if it is not there)."""
    product = ctx.catalog(gtin)
    return product["product_group"] if product else UNKNOWN_GROUP


def group_totals(ctx: Context, lines: list[Line]) -> list[GroupTotal]:
    """Lines summed per product group, sorted by group (deterministic output)."""
    groups: dict[str, GroupTotal] = {}
    for line in lines:
        group = product_group(ctx, line["gtin"])
        g = groups.get(group)
        if g is None:
            g = groups[group] = {
                "product_group": group,
                "amount_cents": 0,
                "quantity_milli": 0,
                "line_count": 0,
            }
        g["amount_cents"] += line["amount_cents"]
        g["quantity_milli"] += line["quantity_milli"]
        g["line_count"] += 1
    return [groups[k] for k in sorted(groups)]
