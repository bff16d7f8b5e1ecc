"""Forwarding a request to the worker that owns its partition (stream/serve/routing.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from faust.exceptions import SameNode

from stream.serve.endpoints import Refusal
from stream.serve.routing import Owners


def _owners(route_req: Any) -> Owners:
    app = SimpleNamespace(router=SimpleNamespace(route_req=route_req), web=object())
    return Owners(app, 4)  # type: ignore[arg-type]


def _forward(owners: Owners) -> Any:
    return asyncio.run(owners.forward(SimpleNamespace(name="t"), "CUST-1", object()))


def test_an_unreachable_owner_is_a_503_not_a_500() -> None:
    # Found with a second local worker that had stopped: a forwarded staff extract got a
    # 500 (aiohttp's ClientConnectorError escaped). The owner is unavailable: 503, retry.
    async def dead_owner(*_: Any) -> Any:
        raise aiohttp.ClientConnectorError(
            SimpleNamespace(host="127.0.0.1", port=6067, ssl=None),  # type: ignore[arg-type]
            OSError(111, "Connection refused"),
        )

    with pytest.raises(Refusal) as refused:
        _forward(_owners(dead_owner))
    assert refused.value.status == 503


def test_a_slow_owner_is_a_503() -> None:
    async def slow_owner(*_: Any) -> Any:
        raise TimeoutError

    with pytest.raises(Refusal) as refused:
        _forward(_owners(slow_owner))
    assert refused.value.status == 503


def test_this_worker_owns_it() -> None:
    async def here(*_: Any) -> Any:
        raise SameNode()

    assert _forward(_owners(here)) is None
