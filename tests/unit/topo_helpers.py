"""Shared builders for the topology unit tests: record factories and a one-step runner.

Records are plain dicts with the Avro field names (see ``avro/fi/coop/purchase``): times are
UTC epoch millis, money integer cents. The factories fill in valid defaults so that a test
only spells out what it is about.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from topologies.consent import FLAGS
from topologies.context import CatalogLookup, Context
from topologies.records import Emit, StepResult
from topologies.rules import DAY_MS, MINUTE_MS, Rules
from topologies.state import MemoryState

# A small chain table for tests; "HOTEL"/"PARTNER" and anything else are total-only.
RULES = Rules(product_level_chains=frozenset({"S_MARKET", "PRISMA", "ALEPA"}))

HOUR_MS = 60 * MINUTE_MS


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """UTC wall-clock time as epoch millis."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


# A weekday in March (Helsinki is UTC+2): 12:00 Helsinki time, far from any midnight.
T0 = utc_ms(2024, 3, 5, 10, 0)


def line(
    line_no: int,
    gtin: str,
    amount_cents: int,
    *,
    unit: str = "PCS",
    quantity_milli: int | None = None,
    bonus_eligible: bool = True,
) -> dict[str, Any]:
    if quantity_milli is None:  # one piece sold, or returned (a return is negative in both)
        quantity_milli = -1000 if amount_cents < 0 else 1000
    return {
        "line_no": line_no,
        "gtin": gtin,
        "unit": unit,
        "quantity_milli": quantity_milli,
        "amount_cents": amount_cents,
        "bonus_eligible": bonus_eligible,
    }


GTIN_MILK = "6408430000012"
GTIN_APPLE = "2000000000015"
GTIN_BEER = "6415600000019"


def default_lines() -> list[dict[str, Any]]:
    return [
        line(1, GTIN_MILK, 189),
        line(2, GTIN_APPLE, 245, unit="KG", quantity_milli=850),
        line(3, GTIN_BEER, 399, bonus_eligible=False),
    ]


def receipt(
    receipt_id: str = "R-0001",
    *,
    card_number: str | None = "CARD-0001",
    store_id: str = "STORE-01",
    chain: str = "S_MARKET",
    purchased_at: int = T0,
    lines: list[dict[str, Any]] | None = None,
    total_cents: int | None = None,
    bonus_eligible_cents: int | None = None,
    payment_method: str = "S_ETUKORTTI_PAYMENT",
    original_receipt_id: str | None = None,
) -> dict[str, Any]:
    """A valid receipt; totals default to the sums of the lines (default: three lines)."""
    lines = default_lines() if lines is None else lines
    if total_cents is None:
        total_cents = sum(x["amount_cents"] for x in lines)
    if bonus_eligible_cents is None:
        bonus_eligible_cents = sum(x["amount_cents"] for x in lines if x["bonus_eligible"])
    return {
        "receipt_id": receipt_id,
        "store_id": store_id,
        "chain": chain,
        "card_number": card_number,
        "purchased_at": purchased_at,
        "total_cents": total_cents,
        "bonus_eligible_cents": bonus_eligible_cents,
        "payment_method": payment_method,
        "original_receipt_id": original_receipt_id,
        "lines": lines,
    }


def card(
    card_number: str = "CARD-0001",
    customer_id: str = "CUST-0001",
    household_id: str = "HH-0001",
    role: str = "MAIN_MEMBER",
) -> dict[str, Any]:
    return {
        "card_number": card_number,
        "customer_id": customer_id,
        "household_id": household_id,
        "role": role,
    }


def link(c: dict[str, Any]) -> dict[str, Any]:
    """The card part of a ``receipts.identified`` record."""
    return {k: c[k] for k in ("card_number", "customer_id", "household_id", "role")}


def identified(r: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    return {"receipt": r, "card": link(c)}


def all_flags(on: bool) -> dict[str, bool]:
    return {flag: on for flag in FLAGS}


def consent(
    customer_id: str = "CUST-0001",
    version: int = 1,
    effective_at: int = T0 - DAY_MS,
    source: str = "APP",
    **flags: bool,
) -> dict[str, Any]:
    """A consent record; flags not named are off."""
    unknown = set(flags) - set(FLAGS)
    assert not unknown, unknown
    record: dict[str, Any] = {
        "customer_id": customer_id,
        "version": version,
        "effective_at": effective_at,
        "source": source,
    }
    for flag in FLAGS:
        record[flag] = bool(flags.get(flag, False))
    return record


def product(
    gtin: str,
    product_group: str,
    *,
    name: str = "product",
    food: bool = True,
    vegetable: bool = False,
    origin: str = "UNKNOWN",
    net_weight_grams: int | None = None,
    co2e_kg_per_kg: float | None = None,
) -> dict[str, Any]:
    return {
        "gtin": gtin,
        "name": name,
        "product_group": product_group,
        "food": food,
        "vegetable": vegetable,
        "origin": origin,
        "net_weight_grams": net_weight_grams,
        "co2e_kg_per_kg": co2e_kg_per_kg,
    }


DEFAULT_PRODUCTS = {
    GTIN_MILK: product(
        GTIN_MILK,
        "DAIRY",
        name="Milk 1 l",
        origin="FINNISH_RAW",
        net_weight_grams=1030,
        co2e_kg_per_kg=1.2,
    ),
    GTIN_APPLE: product(
        GTIN_APPLE, "FRUIT", name="Apples", vegetable=True, origin="FOREIGN", co2e_kg_per_kg=0.7
    ),
    GTIN_BEER: product(GTIN_BEER, "ALCOHOL", name="Beer", food=False, origin="FINNISH_MADE"),
}


def catalog_of(products: dict[str, dict[str, Any]] | None = None) -> CatalogLookup:
    table = DEFAULT_PRODUCTS if products is None else products

    def lookup(gtin: str) -> dict[str, Any] | None:
        return table.get(gtin)

    return lookup


def run(
    stage: Any,
    state: MemoryState,
    topic: str,
    key: str | None,
    value: dict[str, Any] | None,
    now_ms: int,
    *,
    rules: Rules = RULES,
    catalog: CatalogLookup | None = None,
    partition: int = 0,
    offset: int = -1,
    raw_key: bytes | None = None,
    raw_value: bytes | None = None,
) -> StepResult:
    """Run one record through a stage (a ``pipeline.Stage``, a topology module or a step).

    The catalogue defaults to :data:`DEFAULT_PRODUCTS`.
    """
    step = stage if callable(stage) else stage.step
    ctx = Context(
        now_ms=now_ms,
        rules=rules,
        catalog=catalog_of() if catalog is None else catalog,
        topic=topic,
        partition=partition,
        offset=offset,
        raw_key=raw_key,
        raw_value=raw_value,
    )
    return step(ctx, state, topic, key, value)


def emits(result: StepResult, topic: str) -> list[Emit]:
    return [e for e in result.emits if e.topic == topic]


def topics(result: StepResult) -> list[str]:
    return [e.topic for e in result.emits]


def stored(state: MemoryState, prefix: str = "") -> dict[str, Any]:
    """The state entries under a key prefix, as a plain dict."""
    return dict(state.items(prefix))


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class ChangelogState(MemoryState):
    """A stage's state that also keeps its changelog: every write, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, object]] = []

    def set(self, key: str, value: object) -> None:
        super().set(key, copy.deepcopy(value))
        self.log.append((key, copy.deepcopy(value)))

    def delete(self, key: str) -> None:
        super().delete(key)
        self.log.append((key, None))


def cut_and_restore(clean: ChangelogState, cut: int) -> MemoryState:
    """The state a new owner restores from the first ``cut`` changelog writes of ``clean``
    (a crash keeps a prefix of a changelog partition's writes)."""
    restored = MemoryState()
    for key, value in clean.log[:cut]:
        if value is None:
            restored.delete(key)
        else:
            restored.set(key, copy.deepcopy(value))
    return restored
