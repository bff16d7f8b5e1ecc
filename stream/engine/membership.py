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
as a dynamic member does (:func:`stream.engine.patches.static_member_leaves_on_stop`);
static membership only changes what happens after a crash.

The instance id must be stable across restarts of *one* worker and unique among the
workers of a group (a duplicate fences the other worker). Default: the host name and the
worker's state directory -- a worker keeps both across restarts, and two workers cannot
share a state directory (RocksDB locks it). A worker moved to a new host or disk keeps its
identity only through an explicit ``group_instance_id`` setting. No personal data in it.
"""

from __future__ import annotations

import hashlib
import os
import socket

from stream.settings import Settings


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
