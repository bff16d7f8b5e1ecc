"""The app-facing API on the worker's web server: JSON under ``/v1``, documented in
``docs/openapi.yaml``, plus the live-update stream and the "My purchases" page.

Every request goes the same way:

1. identity: a bearer JWT (:mod:`stream.serve.auth`) -> 401 when missing, forged or expired;
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from aiohttp import web as aioweb
from faust.exceptions import SameNode
from faust.web.exceptions import ServiceUnavailable
from yarl import URL

from stream.engine.metrics import Metrics
from stream.engine.state import TableState
from stream.serde.codec import Codec
from stream.serve import auth
from stream.serve.queries import (
    counters_month,
    household_month,
    membership,
    personal_extract,
    purchases_month,
    receipts_month,
    register_members,
)
from stream.settings import Settings
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
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"

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

# The edge's limits (answered, and audited, before any handler runs).
MAX_TARGET_BYTES = 2_048  # path and query: ids are short, a month is 7 characters -> 414
MAX_HEADER_BYTES = 8_192  # all header names and values together -> 431
MAX_BODY_BYTES = 16_384  # the only body is a recall request of a few hundred bytes -> 413
# aiohttp's own parser limits, set above ours (stream/engine/worker.py, http_limits) so that an
# over-long line still reaches the middleware and gets its 414/431 and its audit record.
PARSER_LINE_BYTES = 256 * 1024
# Operational pages: scraped every few seconds, no personal data, not audited.
UNAUDITED = frozenset({"/metrics", "/healthz", "/app/", "/favicon.ico", "/v1/openapi.yaml"})
OUTCOMES = {401: "unauthenticated", 403: "denied", 404: "not_found"}
ROUTES = frozenset(ENDPOINTS) | UNAUDITED


def outcome_of(status: int) -> str:
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


API_KEY: aioweb.AppKey[Any] = aioweb.AppKey("purchase_stream_api", object)


@aioweb.middleware
async def edge(request: Any, handler: Any) -> Any:
    """The worker's web middleware (``faust.App(web_application_options=...)``): every
    request through :meth:`Api.audited` once the API is bound."""
    api = request.app.get(API_KEY)
    if api is None:
        return await handler(request)
    return await api.audited(request, handler)


def http_limits(app: Any) -> None:
    """Raise aiohttp's request-line and header-field limits above the API's own.

    aiohttp answers a line over its parser limit (8,190 bytes) with a 400 of its own, before
    any middleware, and logs the line's first bytes (a path with a customer id in it) at
    ERROR. Above its limit our middleware sees the request, answers 414/431 and audits it.
    Faust builds the aiohttp AppRunner without a way to pass its handler arguments, so they
    are set on the runner (``BaseRunner._kwargs``, passed to the Server it makes at start;
    aiohttp is pinned in pyproject.toml, and tests/integration/test_api_edge.py checks a
    100 KB path gets 414 with its audit record).
    """
    runner = app.web._runner
    runner._kwargs.update(max_line_size=PARSER_LINE_BYTES, max_field_size=PARSER_LINE_BYTES)


class NoRequestContent(logging.Filter):
    """aiohttp's parser errors without the request's bytes (paths carry ids)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        record.msg = "HTTP request refused by the parser (%s)"
        record.args = (type(exc).__name__ if exc is not None else "unknown",)
        record.exc_info = None
        record.exc_text = None
        return True


def audit_context(request: Any) -> AuditContext:
    ctx = request.get("ps_audit")
    if ctx is None:
        ctx = request["ps_audit"] = AuditContext()
    return ctx


def route_template(request: Any) -> str:
    """The route template of a request (a bounded label), or "unmatched"."""
    route = getattr(request.match_info, "route", None)
    resource = getattr(route, "resource", None)
    canonical = getattr(resource, "canonical", None)
    return canonical if isinstance(canonical, str) and canonical in ROUTES else "unmatched"


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
        from stream.engine.partitioning import key_partition

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
        """One read. ``check(viewer)`` -> (allowed, subject customer id or None, routing key,
        purpose); ``read`` runs on the partition that owns the key. The audit record is
        written by :meth:`audited` (the middleware) from what this fills in."""
        ctx = audit_context(request)
        ctx.action = action
        viewer = self.viewer(request)
        ctx.actor = viewer.subject
        problem = validate()
        if problem is not None:
            return web.json({"error": problem}, status=400)
        allowed, subject, key, purpose = check(viewer)
        ctx.subject, ctx.purpose = subject, purpose
        if not allowed:
            return web.json({"error": "forbidden"}, status=403)
        try:
            forwarded = await self.app.router.route_req(table.name, key, web, request)
            ctx.forwarded = True  # the owner wrote the audit record
            return forwarded
        except SameNode:
            pass
        except ServiceUnavailable:
            return web.json({"error": "partition owner unknown (rebalancing)"}, status=503)
        data = read(viewer, TableState(table, self._partition(key)))
        if data is None:
            return web.json({"error": "no data"}, status=404)
        return web.json(data)

    # --- the edge: limits, one audit record per request, metrics ------------------------

    def middleware(self) -> Any:
        """The aiohttp middleware every request of the worker's web server goes through."""

        @aioweb.middleware
        async def audited(request: Any, handler: Any) -> Any:
            return await self.audited(request, handler)

        return audited

    async def audited(self, request: Any, handler: Any) -> Any:
        """Limits first, then the handler, then exactly one audit record for the request.

        Every request but the operational pages (:data:`UNAUDITED`) is audited whatever
        its answer (2xx, 400, 401, 403, 404, 413, 414, 431, 5xx): the handler fills in who,
        whose, what and why (:class:`AuditContext`), this writes it with the real status and
        outcome, and a response is released only after the broker acknowledged its record
        (503 and no data otherwise). A request forwarded to the partition's owner is
        audited there, once. Nothing of the path, query, headers or body is logged.
        """
        started = time.perf_counter()
        ctx = audit_context(request)
        ctx.endpoint = route_template(request)
        try:
            resp = self._refuse_oversized(request)
            if resp is None:
                resp = await handler(request)
        except Refusal as r:
            resp = aioweb.json_response({"error": r.error}, status=r.status)
        except aioweb.HTTPException as exc:  # aiohttp's own: 404/405 routing, 413 body
            resp = aioweb.json_response({"error": exc.reason}, status=exc.status)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: a 500, audited, never its content
            log.error("request to %s failed: %s", ctx.endpoint, type(exc).__name__)
            resp = aioweb.json_response({"error": "internal error"}, status=500)
        status = int(resp.status)
        if request.path in UNAUDITED or ctx.forwarded or ctx.done:
            self._count(ctx.endpoint, status, started)
            return resp
        try:
            await self.audit(
                ctx.actor, ctx.action, ctx.subject, ctx.purpose,
                ctx.outcome or outcome_of(status), {"endpoint": ctx.endpoint, "status": status},
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - no audit record, no answer
            log.error("audit record not written (%s): request refused", type(exc).__name__)
            resp = aioweb.json_response({"error": "audit trail unavailable"}, status=503)
            status = 503
        self._count(ctx.endpoint, status, started)
        return resp

    def _refuse_oversized(self, request: Any) -> Any:
        """414 / 431 / 413 for a request over the limits, before any handler runs."""
        if len(request.raw_path) > MAX_TARGET_BYTES:
            return aioweb.json_response({"error": "request target too long"}, status=414)
        header_bytes = sum(len(k) + len(v) for k, v in request.raw_headers)
        if header_bytes > MAX_HEADER_BYTES:
            return aioweb.json_response({"error": "request headers too large"}, status=431)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return aioweb.json_response({"error": "request body too large"}, status=413)
        return None

    # --- routes -----------------------------------------------------------------------

    def bind(self) -> None:
        app, rules = self.app, self.rules
        web_driver: Any = app.web  # Faust's aiohttp driver: its aiohttp Application
        web_driver.web_app[API_KEY] = self
        http_limits(app)
        logging.getLogger("aiohttp.server").addFilter(NoRequestContent())

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
        """A product recall run (staff). Audited by the middleware with its real outcome:
        ``ok`` only after the broker acknowledged the recall request on every partition."""
        ctx = audit_context(request)
        ctx.action, ctx.purpose = "recall_requested", "product_recall"
        viewer = self.viewer(request)
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
                await self.recall_topic.send(key=key, value=value, partition=p)
                for p in range(self.settings.partitions)
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
                "partitions": self.settings.partitions,
            },
            status=202,
        )

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
        ctx = audit_context(request)
        ctx.action, ctx.purpose = "read_live", OWN_PURPOSE
        viewer = self.viewer(request)
        ctx.actor = viewer.subject
        if viewer.kind != access.CUSTOMER or self.live is None:
            return aioweb.json_response({"error": "forbidden"}, status=403)
        ctx.subject = viewer.subject
        # The stream's answer is on its way before the middleware sees it: audit now.
        await self.audit(
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
