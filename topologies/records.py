"""What a topology step returns, and the shapes of the records it reads and writes.

Records are plain dicts with the Avro field names (timestamps as UTC epoch millis, money as
integer cents). A step returns a :class:`StepResult`: the records to emit (``Emit``), dead
letters (``Reject``) and counts for metrics. The runtime encodes and sends them; the
topology never knows about bytes or brokers.

Record shapes (see ``avro/`` for the schemas of every non-internal topic):

- ``receipts.totals`` ReceiptTotal: receipt_id, card_number, customer_id, household_id, role,
  store_id, chain, purchased_at, total_cents, bonus_eligible_cents, payment_method,
  original_receipt_id
- ``personal.line_items`` PersonalLineItems: customer_id, receipt_id, store_id, chain,
  purchased_at, lines (Line + product_group null|string)
- ``marketing.signals`` MarketingSignal: customer_id, receipt_id, purchased_at, month,
  groups [{product_group, amount_cents, quantity_milli, line_count}]
- ``ereceipts.archive`` EReceipt: customer_id, receipt (Receipt)
- ``smobiili.counters`` SmobiiliCounters: customer_id, month, removed, the sums and shares of
  :func:`topologies.counters.view`, updated_at
- ``aggregates.group`` GroupAggregate: store_id, date, chain, receipt_count, total_cents,
  groups [{product_group, amount_cents, quantity_milli, line_count}]
- ``audit.log`` AuditRecord: at, actor, action, subject_customer_id, purpose, outcome, detail
- internal ``receipts.identified``: {"receipt": Receipt, "card": {card_number, customer_id,
  household_id, role}}
- internal ``aggregates.contributions``: {receipt_id, store_id, chain, date, total_cents,
  groups [...]}
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Emit:
    """A record to send. ``value=None`` is a tombstone (delete on a compacted topic)."""

    topic: str
    key: str | None
    value: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that becomes a dead letter. ``code`` is a bounded reason code (metric label)."""

    code: str
    detail: str
    # Set when the reject is about an earlier record (an expired parked receipt): where that
    # record came from and its original bytes. None means "the record being processed now".
    origin: Origin | None = None


@dataclass(frozen=True, slots=True)
class Origin:
    topic: str
    partition: int
    offset: int
    raw_key: bytes | None
    raw_value: bytes | None


@dataclass(slots=True)
class StepResult:
    emits: list[Emit] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    # (purpose, decision) -> line items; e.g. ("personal", "consent_off"): 12
    routed: Counter[tuple[str, str]] = field(default_factory=Counter)
    # other bounded event counts: "duplicate", "parked", "released", "stale_consent", ...
    events: Counter[str] = field(default_factory=Counter)

    def extend(self, other: StepResult) -> None:
        self.emits.extend(other.emits)
        self.rejects.extend(other.rejects)
        self.routed.update(other.routed)
        self.events.update(other.events)


AUDIT_TOPIC = "audit.log"


def audit_record(
    at: int,
    actor: str,
    action: str,
    subject: str | None,
    purpose: str,
    outcome: str,
    detail: dict[str, Any],
) -> dict[str, Any]:
    """One ``AuditRecord`` (who, whose, what, purpose, when, outcome): the single shape the
    topology, the API and the CLI write to the audit trail."""
    return {
        "at": at,
        "actor": actor,
        "action": action,
        "subject_customer_id": subject,
        "purpose": purpose,
        "outcome": outcome,
        "detail": json.dumps(detail, sort_keys=True),
    }


def audit_emit(
    at: int, actor: str, action: str, subject: str | None, purpose: str, detail: dict[str, Any]
) -> Emit:
    """An audit record of a successful action, to send on ``audit.log`` (no key)."""
    return Emit(AUDIT_TOPIC, None, audit_record(at, actor, action, subject, purpose, "ok", detail))
