"""The worker's event loop (settings.event_loop -> stream.engine.worker.use_event_loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from stream.engine.worker import use_event_loop
from stream.settings import load_settings


@pytest.fixture(autouse=True)
def _restore_policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(before)


async def _which() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_default_setting_is_uvloop_and_runs_coroutines_on_it() -> None:
    use_event_loop(load_settings(env={}).event_loop)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(_which()).startswith("uvloop")
    finally:
        loop.close()


def test_asyncio_from_the_environment() -> None:
    settings = load_settings(env={"PURCHASE_STREAM_EVENT_LOOP": "asyncio"})
    assert settings.event_loop == "asyncio"
    use_event_loop("uvloop")
    use_event_loop(settings.event_loop)  # switches back
    loop = asyncio.new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(_which()) == "asyncio.unix_events"
    finally:
        loop.close()


def test_unknown_loop_is_a_clear_error_and_changes_nothing() -> None:
    before = asyncio.get_event_loop_policy()
    with pytest.raises(ValueError, match="event_loop must be one of uvloop, asyncio"):
        use_event_loop("gevent")
    assert asyncio.get_event_loop_policy() is before
