"""stream/engine/output.py: nothing counts as delivered (no commit, no clean stop) unless it was."""

from __future__ import annotations

import asyncio

import pytest

from stream.engine.output import Output
from stream.local.reachability import free_port


def _unreachable() -> Output:
    # A port nothing listens on: librdkafka queues the record and can never deliver it.
    return Output(f"127.0.0.1:{free_port()}", "test-output")


def test_close_reports_undelivered_records() -> None:
    out = _unreachable()
    assert out.close(0.5) is True  # nothing queued: everything was delivered
    out = _unreachable()
    out.send("receipts.totals", b"HH1", b"v", timestamp_ms=1)
    assert out.pending() > 0  # librdkafka also counts its own queued requests
    assert out.close(0.5) is False


def test_flush_does_not_return_while_records_are_queued() -> None:
    out = _unreachable()
    out.send("receipts.totals", b"HH1", b"v")

    async def flush_briefly() -> None:
        await asyncio.wait_for(out.flush(), timeout=0.5)

    with pytest.raises(TimeoutError):
        asyncio.run(flush_briefly())
    assert out.pending() > 0  # librdkafka also counts its own queued requests
    out.close(0.1)


class _Data:
    """A table's data: records the changelog offsets it is told to keep."""

    def __init__(self) -> None:
        self.kept: list[tuple[str, int, int]] = []

    def set_persisted_offset(self, tp: object, offset: int) -> None:
        self.kept.append((tp.topic, tp.partition, offset))  # type: ignore[attr-defined]


def test_settle_keeps_delivered_changelog_offsets_only_when_everything_was_delivered() -> None:
    """At a stop (store_patches.BEFORE_STOP) the offsets delivered since the last commit go
    into the databases before they are flushed -- unless something is still undelivered."""
    data = _Data()
    out = _unreachable()
    out._changelog_offsets[(id(data), "app-t-changelog", 2)] = (data, 41)  # noqa: SLF001 - a delivery report
    out.send("receipts.totals", b"HH1", b"v")  # cannot be delivered
    out.settle(0.3)
    assert data.kept == []
    out.close(0.1)

    out = _unreachable()
    out._changelog_offsets[(id(data), "app-t-changelog", 2)] = (data, 41)  # noqa: SLF001 - a delivery report
    out.settle(0.3)  # nothing queued: all delivered
    assert data.kept == [("app-t-changelog", 2, 41)]
