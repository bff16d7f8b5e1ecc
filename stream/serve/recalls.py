"""``POST /v1/staff/recalls``: a product recall run, requested by customer service.

The request is written to every partition of ``recall.requests``; each worker runs it on the
partitions it owns (topologies/recall.py) and writes the notifications. The request is
audited by the edge with its real outcome: ``ok`` only after the broker acknowledged the
recall request on every partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import faust
from aiohttp import web as aioweb

from stream.serde.codec import Codec
from stream.serve.audit import audit_context
from stream.serve.endpoints import DATE, GTIN
from stream.serve.identity import viewer_of
from stream.settings import Settings
from topologies import access, recall

log = logging.getLogger(__name__)


def recall_request(
    gtin: str, from_date: str, to_date: str, reason: str, requested_by: str
) -> dict[str, Any]:
    """A validated recall request record (ValueError when it is not valid)."""
    if not GTIN.match(gtin):
        raise ValueError("gtin must be 8-14 digits")
    if not DATE.match(from_date) or not DATE.match(to_date):
        raise ValueError("from and to must be YYYY-MM-DD")
    recall.window(from_date, to_date)
    return {
        "recall_id": f"RC-{uuid.uuid4().hex[:12]}",
        "gtin": gtin,
        "from_date": from_date,
        "to_date": to_date,
        "reason": reason or "product recall",
        "requested_by": requested_by,
        "requested_at": int(time.time() * 1000),
    }


class Recalls:
    """Staff's recall requests, to every partition of ``recall.requests``."""

    def __init__(self, app: faust.App, settings: Settings, codec: Codec) -> None:
        self.app = app
        self.secret = settings.api_jwt_secret
        self.partitions = settings.partitions
        self.codec = codec
        self.topic = app.topic(recall.INPUT, key_type=bytes, value_type=bytes)

    async def start(self, request: Any) -> Any:
        """Validate the request body and write the recall request; 202 with its id."""
        web = self.app.web
        ctx = audit_context(request)
        ctx.action, ctx.purpose = "recall_requested", "product_recall"
        viewer = viewer_of(self.secret, request)
        ctx.actor = viewer.subject
        if viewer.kind != access.STAFF:
            return web.json({"error": "forbidden"}, status=403)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise TypeError("the body must be a JSON object")
            request_record = recall_request(
                str(body["gtin"]),
                str(body["from"]),
                str(body["to"]),
                str(body.get("reason", "")),
                viewer.subject,
            )
        except aioweb.HTTPException:
            raise  # 413 from aiohttp's body limit
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            return web.json({"error": f"bad recall request: {type(exc).__name__}"}, status=400)
        value = self.codec.encode(recall.INPUT, request_record)
        key = self.codec.encode_key(request_record["recall_id"])
        try:
            futs = [
                await self.topic.send(key=key, value=value, partition=p)
                for p in range(self.partitions)
            ]
            await asyncio.gather(*futs)
        except Exception as exc:  # noqa: BLE001 - the action did not happen: say so
            log.error("recall request not written (%s)", type(exc).__name__)
            ctx.outcome = "failed"
            return web.json({"error": "recall request could not be written"}, status=503)
        return web.json(
            {
                "recall_id": request_record["recall_id"],
                "notifications_topic": recall.OUTPUT,
                "partitions": self.partitions,
            },
            status=202,
        )
