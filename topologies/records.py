"""What a topology step returns.

Records are plain dicts with the Avro field names (timestamps as UTC epoch millis, money as
integer cents); their shapes are in :mod:`topologies.record_types`. A step returns a
:class:`StepResult`: the records to emit (``Emit``), dead letters (``Reject``) and counts for
metrics. The runtime encodes and sends them; the topology never knows about bytes or brokers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from topologies.record_types import AuditRecord


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
    """Where a record came from (its topic, partition and offset) and its original bytes."""

    topic: str
    partition: int
    offset: int
    raw_key: bytes | None
    raw_value: bytes | None


@dataclass(slots=True)
class StepResult:
    """What a step did: records to emit, dead letters and event counts for the metrics."""

    emits: list[Emit] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    # (purpose, decision) -> line items; e.g. ("personal", "consent_off"): 12
    routed: Counter[tuple[str, str]] = field(default_factory=Counter)
    # other bounded event counts: "duplicate", "parked", "released", "stale_consent", ...
    events: Counter[str] = field(default_factory=Counter)

    def extend(self, other: StepResult) -> None:
        """Add ``other``'s emits, rejects and counts to this result."""
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
) -> AuditRecord:
    """One ``AuditRecord``: who, whose, what, purpose, when, outcome.

    The single shape the topology, the API and the CLI write to the audit trail.
    """
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
