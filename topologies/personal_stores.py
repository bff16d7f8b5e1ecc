"""The personal-routing stage's stores: what it keeps per person, under which keys.

Stage 2 (:mod:`topologies.personal_routing`) is keyed by customer id. Its state keys
(docs/domain.md §3; ``|`` separates the segments, so identifiers must not contain it):

==============  ====================================  =========================================
prefix          store                                 output
==============  ====================================  =========================================
``rt|``         receipt total records (always)        ``receipts.totals`` keyed by household
``pl|``         product-level personal store          ``personal.line_items`` (compacted)
``ms|``         marketing signals (product groups)    ``marketing.signals`` (compacted)
``er|``         e-receipt archive                     ``ereceipts.archive`` (compacted)
``cn|``         S-mobiili counters per Helsinki month ``smobiili.counters`` keyed by customer
                (``cn|<customer>|<YYYY-MM>``)
``rc|``         recall index by Helsinki date         none: only ``purchase-stream recall`` reads it
``consent|``    the person's consent state            none
``reg|``        the person's periods on each card     none (:mod:`topologies.queries`)
``exp|``        expiry index by Helsinki date         none (:mod:`topologies.personal_retention`)
``erased|``     suppression marker after an erasure   none
==============  ====================================  =========================================

The stores of ``pl|``, ``ms|`` and ``er|`` are consent-gated (:data:`GATED`); the others are
kept whatever the consent (``rt|`` for the household Bonus, ``rc|`` as a legal duty).
"""

from __future__ import annotations

from typing import Any, TypedDict

from topologies import consent as consent_rules
from topologies.context import Context
from topologies.records import Emit, audit_emit

# store prefixes: the per-receipt stores (``<prefix>|<customer>|<receipt>``) and the counters
RECEIPT_TOTALS = "rt"
LINE_ITEMS = "pl"
SIGNALS = "ms"
ERECEIPTS = "er"
COUNTERS = "cn"
# store prefix -> (output topic, purpose label, gating consent flag)
GATED = {
    LINE_ITEMS: ("personal.line_items", "personal", consent_rules.PRODUCT_LEVEL_SERVICES),
    SIGNALS: ("marketing.signals", "marketing", consent_rules.MARKETING_TARGETING),
    ERECEIPTS: ("ereceipts.archive", "ereceipt", consent_rules.E_RECEIPTS),
}
FLAG_STORE = {flag: prefix for prefix, (_t, _p, flag) in GATED.items()}
# store prefix -> retention store name (topologies.rules.RETENTION_STORES)
RETAINED = {
    LINE_ITEMS: "personal_line_items",
    SIGNALS: "marketing_signals",
    ERECEIPTS: "ereceipts",
    RECEIPT_TOTALS: "receipt_totals",
}
COUNTERS_TOPIC = "smobiili.counters"


class Erased(TypedDict):
    """The suppression marker of an erased person (``erased|``)."""

    erased_at: int  # processing time of the tombstone
    version: int  # the highest consent version seen before it (-1: none)


class RecallEntry(TypedDict):
    """An entry of the recall index (``rc|<date>|<customer>|<receipt>``)."""

    card_number: str
    customer_id: str
    receipt_id: str
    purchased_at: int
    gtins: list[str]


ACTOR = "purchase-stream"


def store_key(prefix: str, customer_id: str, receipt_id: str) -> str:
    """State key of a receipt's record in a per-receipt store (``rt``, ``pl``, ``ms``, ``er``)."""
    return f"{prefix}|{customer_id}|{receipt_id}"


def customer_prefix(prefix: str, customer_id: str) -> str:
    """The key prefix of everything one store (``prefix``) holds about one customer."""
    return f"{prefix}|{customer_id}|"


def register_key(customer_id: str, card_number: str) -> str:
    """State key of a person's periods on one card."""
    return f"reg|{customer_id}|{card_number}"


def output_key(customer_id: str, receipt_id: str) -> str:
    """Key of a receipt's record on the compacted personal output topics."""
    return f"{customer_id}/{receipt_id}"


def erased_key(customer_id: str) -> str:
    """State key of an erased person's suppression marker."""
    return f"erased|{customer_id}"


def recall_key(date: str, customer_id: str, receipt_id: str) -> str:
    """State key of a recall index entry (Helsinki purchase date first)."""
    return f"rc|{date}|{customer_id}|{receipt_id}"


def counter_key(customer_id: str, month: str) -> str:
    """State key of a person's S-mobiili counters for a Helsinki month ``YYYY-MM``."""
    return f"{COUNTERS}|{customer_id}|{month}"


def expiry_key(date: str, customer_id: str, receipt_id: str) -> str:
    """State key of a receipt's expiry index entry (Helsinki purchase date first)."""
    return f"exp|{date}|{customer_id}|{receipt_id}"


def audit(ctx: Context, action: str, cid: str | None, purpose: str, detail: dict[str, Any]) -> Emit:
    """An audit record of an action of this stage, at the processing time."""
    return audit_emit(ctx.now_ms, ACTOR, action, cid, purpose, detail)
