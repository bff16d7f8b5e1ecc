"""Static membership (stream/engine/membership.py): the worker's group instance id.

The library behaviour it relies on (Faust passes the id to aiokafka; LeaveGroup for a static
member on a clean stop) is pinned in tests/unit/test_patches.py.
"""

from __future__ import annotations

from stream.engine.membership import group_instance_id
from stream.settings import Settings


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
