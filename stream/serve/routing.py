"""Where a key's data is: a partition of this worker's table, or another worker's.

The subject's key decides the table partition (the same murmur2 partitioner as the
producers). A partition another worker owns is answered by that worker: Faust's router
forwards the request with its headers, and the owner authenticates, checks and audits it
again. While the group rebalances the owner is unknown, and an owner that does not answer
is unavailable: 503.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import faust
from faust.exceptions import SameNode
from faust.web.exceptions import ServiceUnavailable
from yarl import URL

from stream.engine.state import TableState
from stream.serve.endpoints import Refusal

log = logging.getLogger(__name__)


class Owners:
    """The partition owners of the worker's tables, as Faust's router knows them."""

    def __init__(self, app: faust.App, partitions: int) -> None:
        self.app = app
        self.partitions = partitions

    def partition(self, key: str) -> int:
        """The table partition of ``key``."""
        from stream.engine.partitioning import key_partition

        return key_partition(key, self.partitions)

    def state(self, table: Any, key: str) -> TableState:
        """The partition of ``table`` that holds ``key``, read here."""
        return TableState(table, self.partition(key))

    async def forward(self, table: Any, key: str, request: Any) -> Any | None:
        """The owner's answer when another worker owns ``key`` (None: this worker does)."""
        try:
            return await self.app.router.route_req(table.name, key, self.app.web, request)
        except SameNode:
            return None
        except ServiceUnavailable:
            raise Refusal(503, "partition owner unknown (rebalancing)") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The owner is gone or slow (stopped, restarting): the caller may retry, as
            # while rebalancing -- not a 500 of ours.
            log.warning("forward to the partition owner failed (%s)", type(exc).__name__)
            raise Refusal(503, "partition owner unreachable") from None

    def owner(self, table: Any, key: str) -> URL | None:
        """The web address of the worker that owns ``key`` (None: rebalancing)."""
        try:
            return URL(str(self.app.router.key_store(table.name, key)))
        except KeyError:
            return None

    def is_here(self, url: URL) -> bool:
        """Whether ``url`` is this worker (its canonical URL)."""
        here = URL(str(self.app.conf.canonical_url))
        return (url.host, url.port) == (here.host, here.port)

    async def get_json(self, url: URL, authorization: str) -> Any | None:
        """GET ``url`` from another worker with the caller's token (None: no 200 answer)."""
        try:
            async with self.app.http_client.get(
                url, headers={"Authorization": authorization}
            ) as resp:
                return await resp.json() if resp.status == 200 else None
        except (TimeoutError, OSError, ValueError) as exc:
            log.warning("request to the partition owner failed (%s)", type(exc).__name__)
            return None
