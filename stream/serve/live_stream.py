"""``GET /v1/me/live``: server-sent events of the caller's counter and household Bonus
changes, from the worker's :class:`~stream.serve.live.LiveFeed`.

Opening the stream is a read of personal data: it is audited before the stream starts (the
edge sees the response only when the connection ends). The household channel follows the
card register, not the token: the caller's household now is read on the worker that owns
their partition of the personal table (``/v1/me/household``, audited there).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web as aioweb

from stream.serve.audit import AuditTrail, audit_context
from stream.serve.endpoints import E_LIVE, E_MEMBERSHIP, OWN_PURPOSE
from stream.serve.identity import viewer_of
from stream.serve.routing import Owners
from stream.settings import Settings
from topologies import access
from topologies.access import Viewer
from topologies.queries.personal import membership

KEEP_ALIVE_S = 15


def sse(kind: str, payload: dict[str, Any]) -> bytes:
    """One server-sent event; a ``bonus`` event carries the joint accrual only, which both
    household roles may see (per-member sums are for the main member's own request)."""
    if kind == "bonus":
        payload = {
            "household_id": payload["household_id"],
            "month": payload["month"],
            "joint": access.joint_bonus(payload),
        }
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()


class LiveStream:
    """The SSE connections of this worker."""

    def __init__(
        self,
        settings: Settings,
        owners: Owners,
        trail: AuditTrail,
        personal_table: Any,
        live: Any | None,
    ) -> None:
        self.secret = settings.api_jwt_secret
        self.owners = owners
        self.trail = trail
        self.personal = personal_table
        self.live = live

    async def handle(self, request: Any) -> Any:
        """Audit, then stream the caller's changes until the connection closes."""
        ctx = audit_context(request)
        ctx.action, ctx.purpose = "read_live", OWN_PURPOSE
        viewer = viewer_of(self.secret, request)
        ctx.actor = viewer.subject
        if viewer.kind != access.CUSTOMER or self.live is None:
            return aioweb.json_response({"error": "forbidden"}, status=403)
        ctx.subject = viewer.subject
        # The stream's answer is on its way before the middleware sees it: audit now.
        await self.trail.write(
            viewer.subject, "read_live", viewer.subject, OWN_PURPOSE, "ok",
            {"endpoint": E_LIVE, "status": 200},
        )  # fmt: skip
        ctx.done = True
        resp = aioweb.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        held = await self.household_now(viewer, request)
        if held is not None:
            viewer = Viewer(viewer.kind, viewer.subject, held["household_id"])
        queue = await self.live.subscribe(viewer)
        try:
            await resp.write(b": connected\n\n")
            while True:
                try:
                    kind, payload = await asyncio.wait_for(queue.get(), timeout=KEEP_ALIVE_S)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                await resp.write(sse(kind, payload))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.live.unsubscribe(viewer, queue)
        return resp

    async def household_now(self, viewer: Viewer, request: Any) -> dict[str, Any] | None:
        """The caller's household now, by the register: read on the worker that owns their
        partition of the personal table (``/v1/me/household``, audited there)."""
        owner = self.owners.owner(self.personal, viewer.subject)
        if owner is None:
            return None  # rebalancing: no household channel for this connection
        if self.owners.is_here(owner):
            state = self.owners.state(self.personal, viewer.subject)
            held = membership(state, viewer.subject)
            await self.trail.write(
                viewer.subject, "read_membership", viewer.subject, OWN_PURPOSE,
                "ok" if held else "not_found", {"endpoint": E_MEMBERSHIP},
            )  # fmt: skip
            return held
        authorization = request.headers.get("Authorization", "")
        if not authorization and request.query.get("access_token"):
            authorization = f"Bearer {request.query['access_token']}"
        return await self.owners.get_json(owner.with_path(E_MEMBERSHIP), authorization)
