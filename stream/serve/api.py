"""The app-facing API on the worker's web server: JSON under ``/v1``, documented in
``docs/openapi.yaml``, plus the live-update stream and the "My purchases" page.

Every request goes the same way:

1. the edge (:mod:`stream.serve.edge`): limits 414 / 431 / 413 before anything else;
2. identity: a bearer JWT (:mod:`stream.serve.identity`, :mod:`stream.serve.auth`) -> 401
   when missing, forged or expired;
3. access: :func:`topologies.access.may_see` for the caller and the subject -> 403, decided
   *before* any data is read, so a refusal reveals nothing about whether the data exists
   (:mod:`stream.serve.reads`);
4. routing: the subject's key decides the table partition; a partition another worker owns
   is answered by that worker (:mod:`stream.serve.routing`: Faust's router forwards the
   request with its headers, the owner authenticates and checks again and writes the audit
   record);
5. audit: the read is appended to ``audit.log`` (who, whose, what, purpose, when, outcome)
   and *acknowledged by the broker before* the data is returned; if the audit record cannot
   be written the caller gets 503 and no data. Refusals (401, 403) are audited too
   (:mod:`stream.serve.audit`, written by the edge).

No customer, card or household id is logged or used as a metric label: metrics carry the
route template (``/v1/me/counters/{month}``) and the status.

This module wires the pieces to the Faust app (:class:`Api`) and keeps the names the worker
and the CLI import.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from stream.engine.metrics import Metrics
from stream.serde.codec import Codec
from stream.serve import pages
from stream.serve.audit import AuditTrail
from stream.serve.edge import Edge, NoRequestContent, http_limits
from stream.serve.endpoints import (
    E_COUNTERS,
    E_EXTRACT,
    E_HOUSEHOLD,
    E_LIVE,
    E_MEMBERSHIP,
    E_PURCHASES,
    E_RECEIPTS,
    E_STAFF_EXTRACT,
    E_STAFF_RECALL,
    E_STAFF_RECEIPTS,
    P_APP,
    P_FAVICON,
    P_OPENAPI,
)
from stream.serve.live_stream import LiveStream
from stream.serve.reads import Reads
from stream.serve.recalls import Recalls
from stream.serve.routing import Owners
from stream.settings import Settings
from topologies.rules import Rules

__all__ = ["Api"]

Handler = Callable[..., Awaitable[Any]]


def view(name: str, method: str, handler: Handler) -> type[faust.web.View]:
    """A Faust view named ``name`` answering ``method`` with ``handler(request, **match)``."""

    async def call(_view: faust.web.View, request: Any, **match: str) -> Any:
        return await handler(request, **match)

    return type(name, (faust.web.View,), {method: call, "__doc__": handler.__doc__})


class Api:
    """The worker's API: its edge, reads, recalls, live stream and pages, on the Faust app."""

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
        trail = AuditTrail(app, codec, metrics)
        owners = Owners(app, settings.partitions)
        self.edge = Edge(trail, metrics)
        self.reads = Reads(app, settings, rules, owners, personal_table, bonus_table)
        self.recalls = Recalls(app, settings, codec)
        self.live_stream = LiveStream(settings, owners, trail, personal_table, live)

    def routes(self) -> list[tuple[str, str, str, Handler]]:
        """(path, view name, method, handler) of every page the worker serves."""
        r = self.reads
        return [
            (E_COUNTERS, "read_counters", "get", r.counters),
            (E_PURCHASES, "read_purchases", "get", r.purchases),
            (E_RECEIPTS, "read_receipts", "get", r.receipts),
            (E_EXTRACT, "me_extract", "get", r.extract),
            (E_MEMBERSHIP, "me_household", "get", r.membership),
            (E_HOUSEHOLD, "household", "get", r.household),
            (E_STAFF_EXTRACT, "staff_extract", "get", r.staff_extract),
            (E_STAFF_RECEIPTS, "staff_receipts", "get", r.staff_receipts),
            (E_STAFF_RECALL, "Recalls", "post", self.recalls.start),
            (E_LIVE, "live", "get", self.live_stream.handle),
            (P_APP, "page", "get", pages.app_page),
            (P_FAVICON, "favicon", "get", pages.favicon),
            (P_OPENAPI, "openapi", "get", pages.openapi),
        ]

    def bind(self) -> None:
        """Install the edge on the worker's web server and add the routes."""
        web_driver: Any = self.app.web  # Faust's aiohttp driver: its aiohttp Application
        self.edge.install(web_driver.web_app)
        http_limits(self.app)
        logging.getLogger("aiohttp.server").addFilter(NoRequestContent())
        for path, name, method, handler in self.routes():
            self.app.page(path)(view(name, method, handler))

    async def audited(self, request: Any, handler: Any) -> Any:
        """One request through the edge (limits, handler, one audit record)."""
        return await self.edge.audited(request, handler)
