"""The app-facing API on the worker's web server: JSON under ``/v1``, documented in
``docs/openapi.yaml``, plus the live-update stream and the "My purchases" page.

Every request goes the same way:

1. identity: a bearer JWT (:mod:`stream.auth`) -> 401 when missing, forged or expired;
2. access: :func:`topologies.access.may_see` for the caller and the subject -> 403, decided
   *before* any data is read, so a refusal reveals nothing about whether the data exists;
3. routing: the subject's key decides the table partition; a partition another worker owns
   is answered by that worker (Faust's router forwards the request with its headers, the
   owner authenticates and checks again and writes the audit record);
4. audit: the read is appended to ``audit.log`` (who, whose, what, purpose, when, outcome)
   and *acknowledged by the broker before* the data is returned; if the audit record cannot
   be written the caller gets 503 and no data. Refusals (401, 403) are audited too.

No customer, card or household id is logged or used as a metric label: metrics carry the
route template (``/v1/me/counters/{month}``) and the status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
from aiohttp import web as aioweb
from faust.exceptions import SameNode
from faust.web.exceptions import ServiceUnavailable
from yarl import URL

from stream import auth
from stream.codec import Codec
from stream.metrics import Metrics
from stream.queries import (
    counters_month,
    household_month,
    membership,
    personal_extract,
    purchases_month,
    receipts_month,
    register_members,
)
from stream.settings import Settings
from stream.state import TableState
from topologies import access, recall
from topologies.access import Viewer
from topologies.records import AUDIT_TOPIC, audit_record
from topologies.rules import Rules

log = logging.getLogger(__name__)

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
GTIN = re.compile(r"^\d{8,14}$")
OWN_PURPOSE = "own_data_access"
WEB_DIR = Path(__file__).resolve().parent / "web"
OPENAPI = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"

# Route templates: the only values of the metrics' endpoint label.
E_COUNTERS = "/v1/me/counters/{month}"
E_PURCHASES = "/v1/me/purchases/{month}"
E_RECEIPTS = "/v1/me/receipts/{month}"
E_EXTRACT = "/v1/me/extract"
E_MEMBERSHIP = "/v1/me/household"
E_HOUSEHOLD = "/v1/households/{household_id}/bonus/{month}"
E_STAFF_EXTRACT = "/v1/staff/customers/{customer_id}/extract"
E_STAFF_RECEIPTS = "/v1/staff/customers/{customer_id}/receipts/{month}"
E_STAFF_RECALL = "/v1/staff/recalls"
E_LIVE = "/v1/me/live"
ENDPOINTS = (
    E_COUNTERS,
    E_PURCHASES,
    E_RECEIPTS,
    E_EXTRACT,
    E_MEMBERSHIP,
    E_HOUSEHOLD,
    E_STAFF_EXTRACT,
    E_STAFF_RECEIPTS,
    E_STAFF_RECALL,
    E_LIVE,
)


class Refusal(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


Reader = Callable[[TableState], "dict[str, Any] | None"]


class Api:
    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        rules: Rules,
        metrics: Metrics,
        codec: Codec,
        personal_table: Any,
        bonus_table: Any,
        live: Any | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.rules = rules
        self.metrics = metrics
        self.codec = codec
        self.personal = personal_table
        self.bonus = bonus_table
        self.live = live
        self.secret = settings.api_jwt_secret
        self.audit_topic = app.topic("audit.log", key_type=bytes, value_type=bytes)
        self.recall_topic = app.topic(recall.INPUT, key_type=bytes, value_type=bytes)
        for endpoint in ENDPOINTS:  # known label values start at 0 (Prometheus practice)
            for status in ("200", "401", "403"):
                metrics.child(metrics.api_requests, endpoint, status)

    # --- plumbing ---------------------------------------------------------------------

    def viewer(self, request: Any) -> Viewer:
        if not self.secret:
            raise Refusal(503, "API disabled: set PURCHASE_STREAM_API_JWT_SECRET")
        try:
            token = auth.bearer(
                request.headers.get("Authorization"), request.query.get("access_token")
            )
            return auth.verify(self.secret, token)
        except auth.AuthError as exc:
            raise Refusal(401, str(exc)) from None

    async def audit(
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
        fut = await self.audit_topic.send(value=self.codec.encode(AUDIT_TOPIC, record))
        await fut
        self.metrics.audit(action, outcome)

    def _count(self, endpoint: str, status: int, started: float) -> None:
        m = self.metrics
        m.child(m.api_requests, endpoint, str(status)).inc()
        m.child(m.api_latency, endpoint).observe(time.perf_counter() - started)

    def _partition(self, key: str) -> int:
        from stream.worker import key_partition

        return key_partition(key, self.settings.partitions)

    async def serve(
        self,
        web: Any,
        request: Any,
        endpoint: str,
        action: str,
        check: Callable[[Viewer], tuple[bool, str | None, str, str]],
        table: Any,
        read: Callable[[Viewer, TableState], dict[str, Any] | None],
        validate: Callable[[], str | None] = lambda: None,
    ) -> Any:
        """One audited read. ``check(viewer)`` -> (allowed, subject customer id or None,
        routing key, purpose); ``read`` runs on the partition that owns the key."""
        started = time.perf_counter()
        status = 500
        try:
            try:
                viewer = self.viewer(request)
            except Refusal as r:
                status = r.status
                if r.status == 401:
                    await self.audit(
                        "unauthenticated", action, None, "unknown", "unauthenticated",
                        {"endpoint": endpoint, "reason": r.error},
                    )  # fmt: skip
                return web.json({"error": r.error}, status=r.status)
            problem = validate()
            if problem is not None:
                status = 400
                return web.json({"error": problem}, status=400)
            allowed, subject, key, purpose = check(viewer)
            if not allowed:
                status = 403
                await self.audit(
                    viewer.subject, action, subject, purpose, "denied", {"endpoint": endpoint}
                )
                return web.json({"error": "forbidden"}, status=403)
            try:
                forwarded = await self.app.router.route_req(table.name, key, web, request)
                status = forwarded.status
                return forwarded
            except SameNode:
                pass
            except ServiceUnavailable:
                status = 503
                return web.json({"error": "partition owner unknown (rebalancing)"}, status=503)
            try:
                data = read(viewer, TableState(table, self._partition(key)))
            except Refusal as r:  # decided on the owner, from its state (the register)
                status = r.status
                await self.audit(
                    viewer.subject, action, subject, purpose, "denied", {"endpoint": endpoint}
                )
                return web.json({"error": r.error}, status=r.status)
            outcome = "ok" if data is not None else "not_found"
            try:
                await self.audit(
                    viewer.subject, action, subject, purpose, outcome, {"endpoint": endpoint}
                )
            except Exception as exc:  # noqa: BLE001 - no audit record, no data
                log.error("audit record not written (%s): read refused", type(exc).__name__)
                status = 503
                return web.json({"error": "audit trail unavailable"}, status=503)
            if data is None:
                status = 404
                return web.json({"error": "no data"}, status=404)
            status = 200
            return web.json(data)
        finally:
            self._count(endpoint, status, started)

    # --- routes -----------------------------------------------------------------------

    def bind(self) -> None:
        app, rules = self.app, self.rules

        def month_ok(month: str) -> Callable[[], str | None]:
            return lambda: None if MONTH.match(month) else "month must be YYYY-MM"

        def own(kind: str) -> Callable[[Viewer], tuple[bool, str | None, str, str]]:
            def check(v: Viewer) -> tuple[bool, str | None, str, str]:
                allowed = access.may_see(v, kind, customer_id=v.subject)
                return allowed, v.subject, v.subject, OWN_PURPOSE

            return check

        def own_month(
            endpoint: str, action: str, kind: str, query: Callable[[TableState, str, str], Any]
        ) -> None:
            """A caller's own data for a month, from their partition of the personal table."""

            async def view(web: Any, request: Any, month: str) -> Any:
                return await self.serve(
                    web, request, endpoint, action, own(kind), self.personal,
                    lambda v, st: query(st, v.subject, month), month_ok(month),
                )  # fmt: skip

            view.__name__ = action  # Faust names the view after the function
            app.page(endpoint)(view)

        own_month(E_COUNTERS, "read_counters", access.COUNTERS, counters_month)
        own_month(
            E_PURCHASES, "read_purchases", access.PRODUCT_LEVEL,
            lambda st, cid, month: purchases_month(st, rules, cid, month),
        )  # fmt: skip
        own_month(
            E_RECEIPTS, "read_receipts", access.RECEIPT_TOTALS,
            lambda st, cid, month: receipts_month(st, rules, cid, month),
        )  # fmt: skip

        @app.page(E_EXTRACT)
        async def me_extract(web: Any, request: Any) -> Any:
            return await self.serve(
                web, request, E_EXTRACT, "read_extract", own(access.EXTRACT),
                self.personal, lambda v, st: personal_extract(st, rules, v.subject),
            )  # fmt: skip

        @app.page(E_MEMBERSHIP)
        async def me_household(web: Any, request: Any) -> Any:
            return await self.serve(
                web, request, E_MEMBERSHIP, "read_membership", own(access.MEMBERSHIP),
                self.personal, lambda v, st: membership(st, v.subject),
            )  # fmt: skip

        @app.page(E_HOUSEHOLD)
        async def household(web: Any, request: Any, household_id: str, month: str) -> Any:
            def check(v: Viewer) -> tuple[bool, str | None, str, str]:
                # Only customers see households; which household and role is decided on
                # the partition's owner, from the card register (read below).
                return v.kind == access.CUSTOMER, None, household_id, OWN_PURPOSE

            def read(v: Viewer, st: TableState) -> dict[str, Any]:
                members = register_members(st, household_id)
                viewer = access.in_household(v, household_id, members)
                if not access.may_see(viewer, access.JOINT_BONUS, household_id=household_id):
                    raise Refusal(403, "forbidden")
                held = household_month(st, household_id, month)
                return access.household_view(viewer, held["bonus"], held["receipts"], members)

            return await self.serve(
                web, request, E_HOUSEHOLD, "read_household_bonus", check, self.bonus, read,
                month_ok(month),
            )  # fmt: skip

        def staff(kind: str, request: Any, customer_id: str) -> Any:
            def check(v: Viewer) -> tuple[bool, str | None, str, str]:
                purpose = request.query.get("purpose", "")
                ok = access.may_see(v, kind, customer_id=customer_id, purpose=purpose)
                return ok, customer_id, customer_id, purpose or "unstated"

            return check

        @app.page(E_STAFF_EXTRACT)
        async def staff_extract(web: Any, request: Any, customer_id: str) -> Any:
            return await self.serve(
                web, request, E_STAFF_EXTRACT, "staff_read_extract",
                staff(access.EXTRACT, request, customer_id), self.personal,
                lambda v, st: personal_extract(st, rules, customer_id),
            )  # fmt: skip

        @app.page(E_STAFF_RECEIPTS)
        async def staff_receipts(web: Any, request: Any, customer_id: str, month: str) -> Any:
            return await self.serve(
                web, request, E_STAFF_RECEIPTS, "staff_read_receipts",
                staff(access.RECEIPT_TOTALS, request, customer_id), self.personal,
                lambda v, st: receipts_month(st, rules, customer_id, month), month_ok(month),
            )  # fmt: skip

        api = self

        @app.page(E_STAFF_RECALL)
        class Recalls(faust.web.View):
            async def post(self, request: Any) -> Any:
                return await api.start_recall(self.web, request)

        @app.page(E_LIVE)
        async def live(web: Any, request: Any) -> Any:
            return await self.live_stream(request)

        @app.page("/app/")
        async def page(web: Any, request: Any) -> Any:
            return web.html((WEB_DIR / "app.html").read_text())

        @app.page("/v1/openapi.yaml")
        async def openapi(web: Any, request: Any) -> Any:
            return web.text(OPENAPI.read_text(), content_type="application/yaml")

    # --- recalls ----------------------------------------------------------------------

    async def start_recall(self, web: Any, request: Any) -> Any:
        started = time.perf_counter()
        status = 500
        try:
            try:
                viewer = self.viewer(request)
            except Refusal as r:
                status = r.status
                return web.json({"error": r.error}, status=r.status)
            if viewer.kind != access.STAFF:
                status = 403
                await self.audit(
                    viewer.subject, "recall", None, "product_recall", "denied",
                    {"endpoint": E_STAFF_RECALL},
                )  # fmt: skip
                return web.json({"error": "forbidden"}, status=403)
            try:
                body = await request.json()
                request_record = recall_request(
                    str(body["gtin"]),
                    str(body["from"]),
                    str(body["to"]),
                    str(body.get("reason", "")),
                    viewer.subject,
                )
            except (ValueError, KeyError, TypeError) as exc:
                status = 400
                return web.json({"error": f"bad recall request: {exc}"}, status=400)
            await self.audit(
                viewer.subject, "recall_requested", None, "product_recall", "ok",
                {k: request_record[k] for k in ("recall_id", "gtin", "from_date", "to_date")},
            )  # fmt: skip
            value = self.codec.encode(recall.INPUT, request_record)
            key = self.codec.encode_key(request_record["recall_id"])
            futs = [
                await self.recall_topic.send(key=key, value=value, partition=p)
                for p in range(self.settings.partitions)
            ]
            await asyncio.gather(*futs)
            status = 202
            return web.json(
                {
                    "recall_id": request_record["recall_id"],
                    "notifications_topic": recall.OUTPUT,
                    "partitions": self.settings.partitions,
                },
                status=202,
            )
        finally:
            self._count(E_STAFF_RECALL, status, started)

    # --- live updates -----------------------------------------------------------------

    async def _membership(self, viewer: Viewer, request: Any) -> dict[str, Any] | None:
        """The caller's household now, by the register: read on the worker that owns their
        partition of the personal table (``/v1/me/household``, audited there)."""
        try:
            owner = self.app.router.key_store(self.personal.name, viewer.subject)
        except KeyError:
            return None  # rebalancing: no household channel for this connection
        here = URL(str(self.app.conf.canonical_url))
        if (owner.host, owner.port) == (here.host, here.port):
            held = membership(
                TableState(self.personal, self._partition(viewer.subject)), viewer.subject
            )
            await self.audit(
                viewer.subject, "read_membership", viewer.subject, OWN_PURPOSE,
                "ok" if held else "not_found", {"endpoint": E_MEMBERSHIP},
            )  # fmt: skip
            return held
        headers = {"Authorization": request.headers.get("Authorization", "")}
        if not headers["Authorization"] and request.query.get("access_token"):
            headers["Authorization"] = f"Bearer {request.query['access_token']}"
        url = owner.with_path(E_MEMBERSHIP)
        try:
            async with self.app.http_client.get(url, headers=headers) as resp:
                return await resp.json() if resp.status == 200 else None
        except (TimeoutError, OSError, ValueError) as exc:
            log.warning("household of a live connection not found (%s)", type(exc).__name__)
            return None

    async def live_stream(self, request: Any) -> Any:
        """Server-sent events: the caller's counter and household Bonus changes."""
        m = self.metrics
        try:
            viewer = self.viewer(request)
        except Refusal as r:
            m.child(m.api_requests, E_LIVE, str(r.status)).inc()
            if r.status == 401:
                await self.audit(
                    "unauthenticated", "read_live", None, "unknown", "unauthenticated",
                    {"endpoint": E_LIVE, "reason": r.error},
                )  # fmt: skip
            return aioweb.json_response({"error": r.error}, status=r.status)
        if viewer.kind != access.CUSTOMER or self.live is None:
            m.child(m.api_requests, E_LIVE, "403").inc()
            await self.audit(
                viewer.subject, "read_live", None, OWN_PURPOSE, "denied", {"endpoint": E_LIVE}
            )
            return aioweb.json_response({"error": "forbidden"}, status=403)
        await self.audit(
            viewer.subject, "read_live", viewer.subject, OWN_PURPOSE, "ok", {"endpoint": E_LIVE}
        )
        m.child(m.api_requests, E_LIVE, "200").inc()
        resp = aioweb.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        # The household channel follows the card register, not the token.
        held = await self._membership(viewer, request)
        if held is not None:
            viewer = Viewer(viewer.kind, viewer.subject, held["household_id"])
        queue = await self.live.subscribe(viewer)
        try:
            await resp.write(b": connected\n\n")
            while True:
                try:
                    kind, payload = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if kind == "bonus":
                    # Both household roles may see the joint accrual, nothing finer here
                    # (per-member sums are for the main member's own request).
                    payload = {
                        "household_id": payload["household_id"],
                        "month": payload["month"],
                        "joint": {
                            k: payload[k]
                            for k in ("eligible_cents", "rate_bp", "bonus_cents", "receipt_count")
                        },
                    }
                data = json.dumps(payload, separators=(",", ":"))
                await resp.write(f"event: {kind}\ndata: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.live.unsubscribe(viewer, queue)
        return resp


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
