"""The worker's consumer-group identity: static membership, and leaving the group on a clean stop.

Why static membership (KIP-345, ``group.instance.id``): the embedded broker (noida-db 0.2.3)
never evicts a member that died without leaving. A worker killed with ``kill -9`` stays in
the group as a dead member, and the restarted worker, joining under a new member id, waited
for it for ever: its first join answered after the 60 s rebalance timeout, then "Joined
group" every session timeout and never a partition (reproduced: 120 s watched; in issue 16,
396 s until the broker was restarted). With a
``group.instance.id`` the restarted worker *is* the dead member to the broker: its join
replaces the old member id and the group is assigned again (measured: the backlog committed
12-15 s after the restart, most of it the changelog restore). Real Kafka evicts dead
members after ``session.timeout.ms`` anyway; there static membership also spares a
rebalance when a crashed worker comes back within the session timeout.

Why leave on a clean stop anyway: aiokafka, like the Java client, does not send LeaveGroup
for a static member (so that a rolling restart does not rebalance). On noida-db a worker
that is stopped and not started again would then keep its partitions forever, and the
other workers would never take them over. So the worker leaves the group on a clean stop
as a dynamic member does (:func:`static_member_leaves_on_stop`); static membership only
changes what happens after a crash.

The instance id must be stable across restarts of *one* worker and unique among the
workers of a group (a duplicate fences the other worker). Default: the host name and the
worker's state directory -- a worker keeps both across restarts, and two workers cannot
share a state directory (RocksDB locks it). A worker moved to a new host or disk keeps its
identity only through an explicit ``group_instance_id`` setting. No personal data in it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from typing import Any

from stream.settings import Settings

log = logging.getLogger(__name__)


def group_instance_id(settings: Settings, hostname: str | None = None) -> str | None:
    """``settings.group_instance_id``, or one derived from the host and the state directory.

    None (a dynamic member) when ``settings.static_membership`` is off.
    """
    if not settings.static_membership:
        return None
    if settings.group_instance_id:
        return settings.group_instance_id
    host = hostname if hostname is not None else socket.gethostname()
    state = os.path.abspath(settings.state_dir)
    digest = hashlib.sha256(f"{host}\0{state}".encode()).hexdigest()[:12]
    return f"{settings.app_id}-{host}-{digest}"


def static_member_leaves_on_stop() -> None:
    """Make aiokafka's consumer send LeaveGroup on close for a static member too.

    Patches ``aiokafka.consumer.group_coordinator.GroupCoordinator._maybe_leave_group``
    (aiokafka 0.14: it sends ``LeaveGroupRequest(group, member_id)`` only when
    ``_group_instance_id is None``; tests/unit/test_membership.py pins that behaviour and
    this patch). The request is the same v0/v1 LeaveGroup a dynamic member sends, naming
    the member id the broker gave this static member; noida-db and Kafka remove the member
    and rebalance. A crash sends nothing, and the restart then takes over the dead member
    by its instance id.
    """
    from aiokafka.consumer import group_coordinator as gc

    coordinator = gc.GroupCoordinator
    if getattr(coordinator, "_ps_static_leave", False):
        return

    # Kept for tests/unit/test_membership.py, which pins what it does.
    coordinator._ps_original_maybe_leave_group = coordinator._maybe_leave_group

    async def _maybe_leave_group(self: Any) -> None:
        if self.generation > 0:
            # Minimal effort, like aiokafka's own: no resend on failure.
            request = gc.LeaveGroupRequest(self.group_id, self.member_id)
            try:
                await self._send_req(request)
            except gc.Errors.KafkaError as err:
                log.error("LeaveGroup request failed: %s", err)
            else:
                log.info("LeaveGroup request succeeded")
        self.reset_generation()

    coordinator._maybe_leave_group = _maybe_leave_group
    coordinator._ps_static_leave = True
