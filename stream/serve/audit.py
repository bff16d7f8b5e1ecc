"""The API's audit trail: one record per request on ``audit.log`` (who, whose, what, purpose,
when, outcome), acknowledged by the broker before the answer is released.

Handlers fill in an :class:`AuditContext` as they learn who asks for whose data and why; the
edge (:mod:`stream.serve.edge`) writes the record with the request's real status. No
customer, card or household id goes into a log line or a metric label.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import faust
from aiohttp import web as aioweb

from stream.engine.metrics import Metrics
from stream.serde.codec import Codec
from topologies.records import AUDIT_TOPIC, audit_record

OUTCOMES = {401: "unauthenticated", 403: "denied", 404: "not_found"}


def outcome_of(status: int) -> str:
    """The audit outcome of an HTTP status."""
    if status < 300:
        return "ok"
    if status in OUTCOMES:
        return OUTCOMES[status]
    return "rejected" if status < 500 else "failed"


@dataclass
class AuditContext:
    """What the audit record of one request says; handlers fill it in as they learn it."""

    endpoint: str = "unmatched"
    actor: str = "unauthenticated"
    action: str = "http_request"
    subject: str | None = None
    purpose: str = "unknown"
    outcome: str | None = None  # None: from the status (outcome_of)
    forwarded: bool = False  # answered by the partition's owner, which audits it
    done: bool = False  # audited by the handler itself (a stream, before it starts)


AUDIT_KEY: aioweb.RequestKey[AuditContext] = aioweb.RequestKey("ps_audit", AuditContext)


def audit_context(request: Any) -> AuditContext:
    """The request's :class:`AuditContext` (made on first use)."""
    ctx: AuditContext | None = request.get(AUDIT_KEY)
    if ctx is None:
        ctx = request[AUDIT_KEY] = AuditContext()
    return ctx


class AuditTrail:
    """Appends audit records to ``audit.log`` through the worker's producer."""

    def __init__(self, app: faust.App, codec: Codec, metrics: Metrics) -> None:
        self.codec = codec
        self.metrics = metrics
        self.topic = app.topic(AUDIT_TOPIC, key_type=bytes, value_type=bytes)

    async def write(
        self,
        actor: str,
        action: str,
        subject: str | None,
        purpose: str,
        outcome: str,
        detail: dict[str, Any],
    ) -> None:
        """Append one audit record and wait for the broker's acknowledgement."""
        record = audit_record(
            int(time.time() * 1000), actor, action, subject, purpose, outcome, detail
        )
        fut = await self.topic.send(value=self.codec.encode(AUDIT_TOPIC, record))
        await fut
        self.metrics.audit(action, outcome)
