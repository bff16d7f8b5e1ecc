"""The API's edge: every request of the worker's web server goes through :func:`edge`.

Limits first (414 / 431 / 413, before any handler runs), then the handler, then exactly one
audit record for the request with its real status (:mod:`stream.serve.audit`), and the
request's metrics (labelled by route template and status, never by an id). A handler's
:class:`~stream.serve.endpoints.Refusal`, aiohttp's own HTTP errors and a bug (500) are all
answered as JSON and audited. Nothing of the path, query, headers or body is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web as aioweb

from stream.engine.metrics import Metrics
from stream.engine.patches import http_parser_limits
from stream.serve.audit import AuditTrail, audit_context, outcome_of
from stream.serve.endpoints import ENDPOINTS, ROUTES, UNAUDITED, Refusal

log = logging.getLogger(__name__)

# The edge's limits (answered, and audited, before any handler runs).
MAX_TARGET_BYTES = 2_048  # path and query: ids are short, a month is 7 characters -> 414
MAX_HEADER_BYTES = 8_192  # all header names and values together -> 431
MAX_BODY_BYTES = 16_384  # the only body is a recall request of a few hundred bytes -> 413
# aiohttp's own parser limits, set above ours (http_limits) so that an over-long line still
# reaches the middleware and gets its 414/431 and its audit record.
PARSER_LINE_BYTES = 256 * 1024

Handler = Callable[[Any], Awaitable[Any]]


def route_template(request: Any) -> str:
    """The route template of a request (a bounded label), or "unmatched"."""
    route = getattr(request.match_info, "route", None)
    resource = getattr(route, "resource", None)
    canonical = getattr(resource, "canonical", None)
    return canonical if isinstance(canonical, str) and canonical in ROUTES else "unmatched"


def refuse_oversized(request: Any) -> Any:
    """414 / 431 / 413 for a request over the limits (None: within them)."""
    if len(request.raw_path) > MAX_TARGET_BYTES:
        return aioweb.json_response({"error": "request target too long"}, status=414)
    header_bytes = sum(len(k) + len(v) for k, v in request.raw_headers)
    if header_bytes > MAX_HEADER_BYTES:
        return aioweb.json_response({"error": "request headers too large"}, status=431)
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return aioweb.json_response({"error": "request body too large"}, status=413)
    return None


class Edge:
    """Limits, one audit record per request, and the request metrics."""

    def __init__(self, trail: AuditTrail, metrics: Metrics) -> None:
        self.trail = trail
        self.metrics = metrics
        for endpoint in ENDPOINTS:  # known label values start at 0 (Prometheus practice)
            for status in ("200", "401", "403"):
                metrics.child(metrics.api_requests, endpoint, status)

    def install(self, web_app: Any) -> None:
        """Bind this edge to the worker's aiohttp Application (:func:`edge` finds it there)."""
        web_app[EDGE_KEY] = self

    async def audited(self, request: Any, handler: Handler) -> Any:
        """Limits first, then the handler, then exactly one audit record for the request.

        Every request but the operational pages (:data:`UNAUDITED`) is audited whatever
        its answer (2xx, 400, 401, 403, 404, 413, 414, 431, 5xx): the handler fills in who,
        whose, what and why (:class:`~stream.serve.audit.AuditContext`), this writes it with
        the real status and outcome, and a response is released only after the broker
        acknowledged its record (503 and no data otherwise). A request forwarded to the
        partition's owner is audited there, once.
        """
        started = time.perf_counter()
        ctx = audit_context(request)
        ctx.endpoint = route_template(request)
        resp = await self._answer(request, handler, ctx.endpoint)
        status = int(resp.status)
        if request.path in UNAUDITED or ctx.forwarded or ctx.done:
            self._count(ctx.endpoint, status, started)
            return resp
        try:
            await self.trail.write(
                ctx.actor, ctx.action, ctx.subject, ctx.purpose,
                ctx.outcome or outcome_of(status), {"endpoint": ctx.endpoint, "status": status},
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - no audit record, no answer
            log.error("audit record not written (%s): request refused", type(exc).__name__)
            resp = aioweb.json_response({"error": "audit trail unavailable"}, status=503)
            status = 503
        self._count(ctx.endpoint, status, started)
        return resp

    async def _answer(self, request: Any, handler: Handler, endpoint: str) -> Any:
        """The handler's response, or the JSON error that stands for it."""
        try:
            resp = refuse_oversized(request)
            return resp if resp is not None else await handler(request)
        except Refusal as r:
            return aioweb.json_response({"error": r.error}, status=r.status)
        except aioweb.HTTPException as exc:  # aiohttp's own: 404/405 routing, 413 body
            return aioweb.json_response({"error": exc.reason}, status=exc.status)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: a 500, audited, never its content
            log.error("request to %s failed: %s", endpoint, type(exc).__name__)
            return aioweb.json_response({"error": "internal error"}, status=500)

    def _count(self, endpoint: str, status: int, started: float) -> None:
        m = self.metrics
        m.child(m.api_requests, endpoint, str(status)).inc()
        m.child(m.api_latency, endpoint).observe(time.perf_counter() - started)


EDGE_KEY: aioweb.AppKey[Edge] = aioweb.AppKey("purchase_stream_edge", Edge)


@aioweb.middleware
async def edge(request: Any, handler: Any) -> Any:
    """The worker's web middleware (``faust.App(web_application_options=...)``): every
    request through :meth:`Edge.audited` once the API is bound."""
    bound = request.app.get(EDGE_KEY)
    if bound is None:
        return await handler(request)
    return await bound.audited(request, handler)


def http_limits(app: Any) -> None:
    """Raise aiohttp's request-line and header-field limits above the API's own, so that an
    over-long line reaches the middleware and gets its 414/431 and its audit record (instead
    of aiohttp's own 400, logged with the line's first bytes). A patch of aiohttp's runner:
    :func:`stream.engine.patches.http_parser_limits`."""
    http_parser_limits(app.web, PARSER_LINE_BYTES, PARSER_LINE_BYTES)


class NoRequestContent(logging.Filter):
    """aiohttp's parser errors without the request's bytes (paths carry ids)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message and drop its exception (which quotes the request)."""
        exc = record.exc_info[1] if record.exc_info else None
        record.msg = "HTTP request refused by the parser (%s)"
        record.args = (type(exc).__name__ if exc is not None else "unknown",)
        record.exc_info = None
        record.exc_text = None
        return True
