"""The API's edge without a broker: limits before any handler, exactly one audit record per
request with its real status, none for the public pages, and no answer without its record.
(tests/integration/test_api_edge.py runs the same over real HTTP on a worker.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web as aioweb
from aiohttp.test_utils import make_mocked_request

from stream.engine.metrics import Metrics
from stream.serve.audit import audit_context
from stream.serve.edge import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_TARGET_BYTES, Edge
from stream.serve.endpoints import Refusal


class Trail:
    """Records what the edge would append to audit.log (or fails, like a lost broker)."""

    def __init__(self, fail: bool = False) -> None:
        self.records: list[tuple[Any, ...]] = []
        self.fail = fail

    async def write(self, *record: Any) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.records.append(record)


async def ok(request: Any) -> Any:
    ctx = audit_context(request)
    ctx.actor, ctx.action, ctx.subject, ctx.purpose = "C-1", "read_counters", "C-1", "own"
    return aioweb.json_response({"data": 1})


async def refused(request: Any) -> Any:
    raise Refusal(401, "no token")


async def broken(request: Any) -> Any:
    raise RuntimeError("C-1 secret detail")


def answer(
    path: str, handler: Any = ok, trail: Trail | None = None, **headers: str
) -> tuple[int, list[tuple[Any, ...]]]:
    """The status the edge answers a GET of ``path`` with, and the audit records written."""
    trail = trail if trail is not None else Trail()
    edge = Edge(trail, Metrics())  # type: ignore[arg-type]

    async def run() -> Any:
        request = make_mocked_request("GET", path, headers=headers)
        return await edge.audited(request, handler)

    return int(asyncio.run(run()).status), trail.records


def status_of(record: tuple[Any, ...]) -> int:
    return int(record[5]["status"])


@pytest.mark.parametrize(
    "path,headers,status",
    [
        ("/v1/me/extract?" + "x" * MAX_TARGET_BYTES, {}, 414),
        ("/v1/me/extract", {"X-Big": "y" * MAX_HEADER_BYTES}, 431),
        ("/v1/me/extract", {"Content-Length": str(MAX_BODY_BYTES + 1)}, 413),
    ],
    ids=["target", "headers", "body"],
)
def test_over_a_limit_the_handler_never_runs_and_the_refusal_is_audited(
    path: str, headers: dict[str, str], status: int
) -> None:
    got, records = answer(path, broken, **headers)
    assert got == status
    assert len(records) == 1 and status_of(records[0]) == status
    assert records[0][4] == "rejected"


def test_one_record_per_request_with_its_real_status_and_outcome() -> None:
    got, records = answer("/v1/me/extract")
    assert got == 200 and records == [
        ("C-1", "read_counters", "C-1", "own", "ok", {"endpoint": "unmatched", "status": 200})
    ]
    got, records = answer("/v1/me/extract", refused)
    assert got == 401 and [(r[0], r[4], status_of(r)) for r in records] == [
        ("unauthenticated", "unauthenticated", 401)
    ]
    got, records = answer("/v1/me/extract", broken)
    assert got == 500 and [(r[4], status_of(r)) for r in records] == [("failed", 500)]


def test_no_audit_record_no_answer() -> None:
    got, records = answer("/v1/me/extract", trail=Trail(fail=True))
    assert got == 503 and records == []


@pytest.mark.parametrize("path", ["/favicon.ico", "/app/", "/v1/openapi.yaml", "/metrics"])
def test_public_pages_are_not_audited(path: str) -> None:
    got, records = answer(path)
    assert got == 200 and records == []
