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
