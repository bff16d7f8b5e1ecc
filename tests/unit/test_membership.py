"""Static membership (stream/engine/membership.py) and the library behaviour it relies on.

Pinned here because the worker patches a library internal: if an aiokafka or faust-streaming
upgrade changes any of it, this fails before a worker misbehaves.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust
from aiokafka.consumer import group_coordinator as gc

from stream.engine.membership import group_instance_id, static_member_leaves_on_stop
from stream.settings import Settings


class FakeCoordinator:
    """The attributes ``_maybe_leave_group`` uses, and the requests it sends."""

    def __init__(self, instance_id: str | None) -> None:
        self.group_id = "purchase-stream"
        self.member_id = "member-1"
        self.generation = 3
        self._group_instance_id = instance_id
        self.sent: list[Any] = []
        self.reset = False

    async def _send_req(self, request: Any) -> None:
        self.sent.append(request)

    def reset_generation(self) -> None:
        self.reset = True


def _leave(method: Any, instance_id: str | None) -> FakeCoordinator:
    fake = FakeCoordinator(instance_id)
    asyncio.run(method(fake))
    return fake


def test_aiokafka_does_not_leave_for_a_static_member_and_the_patch_does() -> None:
    static_member_leaves_on_stop()
    original = gc.GroupCoordinator._ps_original_maybe_leave_group  # type: ignore[attr-defined]
    # What aiokafka does (the reason for the patch): a dynamic member leaves, a static not.
    assert len(_leave(original, None).sent) == 1
    static = _leave(original, "w-1")
    assert static.sent == [] and static.reset
    # Patched: a static member leaves too, with the same LeaveGroup naming its member id.
    patched = _leave(gc.GroupCoordinator._maybe_leave_group, "w-1")
    assert patched.reset
    [request] = patched.sent
    assert isinstance(request, gc.LeaveGroupRequest)
    assert (request._group, request._member_id) == ("purchase-stream", "member-1")
    # Not a member (generation 0): nothing to leave.
    fake = FakeCoordinator("w-1")
    fake.generation = 0
    asyncio.run(gc.GroupCoordinator._maybe_leave_group(fake))
    assert fake.sent == [] and fake.reset


def test_faust_passes_the_instance_id_to_the_aiokafka_consumer(tmp_path: Path) -> None:
    app = faust.App(
        "membership-test",
        broker="kafka://127.0.0.1:1",
        datadir=str(tmp_path),
        consumer_group_instance_id="worker-7",
    )
    thread = app.consumer._thread  # type: ignore[attr-defined]

    async def create() -> Any:  # aiokafka wants a running loop; nothing connects here
        return thread._create_worker_consumer(app.transport)

    consumer = asyncio.run(create())
    assert consumer._group_instance_id == "worker-7"


def test_instance_id_is_stable_per_host_and_state_dir_and_can_be_set_or_switched_off() -> None:
    a = Settings(state_dir="/data/w1")
    assert group_instance_id(a, "host-a") == group_instance_id(a, "host-a")
    assert group_instance_id(a, "host-a").startswith("purchase-stream-host-a-")
    assert group_instance_id(a, "host-a") != group_instance_id(a, "host-b")
    assert group_instance_id(a, "host-a") != group_instance_id(
        Settings(state_dir="/data/w2"), "host-a"
    )
    assert group_instance_id(Settings(group_instance_id="w-1"), "host-a") == "w-1"
    assert group_instance_id(Settings(static_membership=False), "host-a") is None
