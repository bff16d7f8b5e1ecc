"""The API's reads: one method per data route, all the same way through :meth:`Reads.serve`.

1. identity: the bearer token (:mod:`stream.serve.identity`) -> 401 when missing, forged or
   expired;
2. access: :func:`topologies.access.may_see` for the caller and the subject -> 403, decided
   *before* any data is read, so a refusal reveals nothing about whether the data exists;
3. routing: the subject's key decides the table partition; a partition another worker owns
   is answered by that worker (:mod:`stream.serve.routing`);
4. the read itself, on this worker's partition, by a query of :mod:`topologies.queries`.

What the audit record says (who, whose, what, why) is filled in on the request's
:class:`~stream.serve.audit.AuditContext` along the way; the edge writes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust

from stream.engine.state import TableState
from stream.serve.audit import audit_context
from stream.serve.endpoints import OWN_PURPOSE, Refusal, month_problem
from stream.serve.identity import viewer_of
from stream.serve.routing import Owners
from stream.settings import Settings
from topologies import access
from topologies.access import Viewer
from topologies.queries.household_bonus import household_month, register_members
from topologies.queries.personal import (
    counters_month,
    membership,
    personal_extract,
    purchases_month,
    receipts_month,
)
from topologies.rules import Rules

# check(viewer) -> (allowed, subject customer id or None, routing key, purpose)
Check = Callable[[Viewer], tuple[bool, str | None, str, str]]
# read(viewer, the key's partition) -> the answer (None: 404)
Read = Callable[[Viewer, TableState], "dict[str, Any] | None"]


def own(kind: str) -> Check:
    """A customer's own data of ``kind``, keyed by their customer id."""

    def check(v: Viewer) -> tuple[bool, str | None, str, str]:
        return access.may_see(v, kind, customer_id=v.subject), v.subject, v.subject, OWN_PURPOSE

    return check


def staff(kind: str, request: Any, customer_id: str) -> Check:
    """Staff reading one customer's data of ``kind`` for the purpose the query states."""

    def check(v: Viewer) -> tuple[bool, str | None, str, str]:
        purpose = request.query.get("purpose", "")
        ok = access.may_see(v, kind, customer_id=customer_id, purpose=purpose)
        return ok, customer_id, customer_id, purpose or "unstated"

    return check


def customers_only(household_id: str) -> Check:
    """Only customers ask for a household; which one and in what role is decided on the
    partition's owner, from the card register (:meth:`Reads.household`)."""

    def check(v: Viewer) -> tuple[bool, str | None, str, str]:
        return v.kind == access.CUSTOMER, None, household_id, OWN_PURPOSE

    return check


class Reads:
    """The data routes of the personal table and the Bonus ledger table."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        rules: Rules,
        owners: Owners,
        personal_table: Any,
        bonus_table: Any,
    ) -> None:
        self.app = app
        self.secret = settings.api_jwt_secret
        self.rules = rules
        self.owners = owners
        self.personal = personal_table
        self.bonus = bonus_table

    async def serve(
        self,
        request: Any,
        action: str,
        check: Check,
        table: Any,
        read: Read,
        problem: str | None = None,
    ) -> Any:
        """One read. ``check(viewer)`` -> (allowed, subject customer id or None, routing key,
        purpose); ``read`` runs on the partition that owns the key; ``problem``: why the
        request's parameters are invalid (400)."""
        web = self.app.web
        ctx = audit_context(request)
        ctx.action = action
        viewer = viewer_of(self.secret, request)
        ctx.actor = viewer.subject
        if problem is not None:
            return web.json({"error": problem}, status=400)
        allowed, subject, key, purpose = check(viewer)
        ctx.subject, ctx.purpose = subject, purpose
        if not allowed:
            return web.json({"error": "forbidden"}, status=403)
        forwarded = await self.owners.forward(table, key, request)
        if forwarded is not None:
            ctx.forwarded = True  # the owner wrote the audit record
            return forwarded
        data = read(viewer, self.owners.state(table, key))
        if data is None:
            return web.json({"error": "no data"}, status=404)
        return web.json(data)

    # --- a customer's own data ----------------------------------------------------------

    async def counters(self, request: Any, month: str) -> Any:
        """``GET /v1/me/counters/{month}``: the caller's S-mobiili counters."""
        return await self.serve(
            request, "read_counters", own(access.COUNTERS), self.personal,
            lambda v, st: counters_month(st, v.subject, month), month_problem(month),
        )  # fmt: skip

    async def purchases(self, request: Any, month: str) -> Any:
        """``GET /v1/me/purchases/{month}``: the caller's product-level purchases."""
        return await self.serve(
            request, "read_purchases", own(access.PRODUCT_LEVEL), self.personal,
            lambda v, st: purchases_month(st, self.rules, v.subject, month),
            month_problem(month),
        )  # fmt: skip

    async def receipts(self, request: Any, month: str) -> Any:
        """``GET /v1/me/receipts/{month}``: the caller's receipt totals."""
        return await self.serve(
            request, "read_receipts", own(access.RECEIPT_TOTALS), self.personal,
            lambda v, st: receipts_month(st, self.rules, v.subject, month),
            month_problem(month),
        )  # fmt: skip

    async def extract(self, request: Any) -> Any:
        """``GET /v1/me/extract``: everything held about the caller."""
        return await self.serve(
            request, "read_extract", own(access.EXTRACT), self.personal,
            lambda v, st: personal_extract(st, self.rules, v.subject),
        )  # fmt: skip

    async def membership(self, request: Any) -> Any:
        """``GET /v1/me/household``: the caller's household and role in the register now."""
        return await self.serve(
            request, "read_membership", own(access.MEMBERSHIP), self.personal,
            lambda v, st: membership(st, v.subject),
        )  # fmt: skip

    # --- a household ----------------------------------------------------------------------

    async def household(self, request: Any, household_id: str, month: str) -> Any:
        """``GET /v1/households/{household_id}/bonus/{month}``: as the caller's role allows."""

        def read(v: Viewer, st: TableState) -> dict[str, Any]:
            members = register_members(st, household_id)
            viewer = access.in_household(v, household_id, members)
            if not access.may_see(viewer, access.JOINT_BONUS, household_id=household_id):
                raise Refusal(403, "forbidden")
            held = household_month(st, household_id, month)
            return access.household_view(viewer, held["bonus"], held["receipts"], members)

        return await self.serve(
            request, "read_household_bonus", customers_only(household_id), self.bonus, read,
            month_problem(month),
        )  # fmt: skip

    # --- customer service -----------------------------------------------------------------

    async def staff_extract(self, request: Any, customer_id: str) -> Any:
        """``GET /v1/staff/customers/{customer_id}/extract?purpose=``."""
        return await self.serve(
            request, "staff_read_extract", staff(access.EXTRACT, request, customer_id),
            self.personal, lambda v, st: personal_extract(st, self.rules, customer_id),
        )  # fmt: skip

    async def staff_receipts(self, request: Any, customer_id: str, month: str) -> Any:
        """``GET /v1/staff/customers/{customer_id}/receipts/{month}?purpose=``."""
        return await self.serve(
            request, "staff_read_receipts", staff(access.RECEIPT_TOTALS, request, customer_id),
            self.personal, lambda v, st: receipts_month(st, self.rules, customer_id, month),
            month_problem(month),
        )  # fmt: skip
