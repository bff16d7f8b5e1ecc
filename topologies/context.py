"""What a step may know besides its state and the record: the clock, the rules, the catalogue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from topologies.record_types import Product
from topologies.rules import Rules

CatalogLookup = Callable[[str], "Product | None"]


def no_catalog(_gtin: str) -> Product | None:
    """A catalogue that knows no product."""
    return None


@dataclass(slots=True)
class Context:
    """Per-record context.

    ``now_ms`` is the processing clock: the record's broker timestamp (as in the worker), so
    parking windows and sweeps behave the same in ``replay`` and on the broker.
    ``raw_key``/``raw_value`` are the record's original bytes, kept for dead letters that
    are only decided later (an expired parked receipt).
    """

    now_ms: int
    rules: Rules
    catalog: CatalogLookup = no_catalog
    topic: str = ""
    partition: int = 0
    offset: int = -1
    raw_key: bytes | None = None
    raw_value: bytes | None = None
