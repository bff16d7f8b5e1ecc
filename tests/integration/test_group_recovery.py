"""A worker killed with ``kill -9`` and restarted resumes within 60 s; one stopped for good is
taken over.

Resuming means holding partitions and committing again within 60 s (issue 16); the whole
backlog then drains with a wider margin (a loaded 2-core machine once needed more than a
minute for a drain that progressed all along).

Issue 16: on the embedded broker (noida-db) a worker restarted after ``kill -9`` logged
"Joined group" every 10 s for 396 s and never got a partition, until the broker was
restarted -- noida-db never evicts the dead member, which stayed the group's leader. This
test reproduced it (the restarted worker held nothing for the whole 120 s watched); the fix
is static membership (stream/engine/membership.py): the restart takes over its dead member by its
``group.instance.id``.

Static members do not leave the group on a clean stop in aiokafka; on noida-db a worker
stopped for good then kept its partitions for ever (reproduced: lag stuck for the 60 s
watched). So the second half stops the other worker cleanly and does not start it again:
the survivor must take over every partition.

The same runs on tansu with static membership off: tansu evicts dead members itself, and
its static membership is broken (a restarted static member of a two-worker group rejoined
at generation 0 every 13 s and never got an assignment; measured).
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.local.broker import EmbeddedBroker
from stream.local.offsets import committed_offsets, group_lag
from stream.local.offsets import lag as partition_lag
from stream.local.registry_server import EmbeddedRegistryServer
from stream.local.topic_admin import create_topics
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.simulator.config import SimConfig
from stream.simulator.generator import generate
from tests.integration.tansu import TansuBroker
from tests.integration.worker_harness import (
    WorkerProcess,
    assigned,
    phases,
    produce_events,
    wait_group_stable,
)
from topologies.pipeline import GROUP_INPUTS

PARTITIONS = 4
# What issue 16 asks of a restart after kill -9, and of a takeover.
RESUME_WITHIN_S = 60.0
# The whole backlog (a few hundred receipts through four stages) on a loaded machine.
DRAIN_WITHIN_S = 240.0


@pytest.fixture(params=["noida-db", "tansu"])
def scenario(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    broker_factory: Callable[..., EmbeddedBroker],
) -> Iterator[tuple[Any, dict[str, str]]]:
    env = {"PURCHASE_STREAM_BROKER_SESSION_TIMEOUT_S": "10"}
    if request.param == "noida-db":
        yield broker_factory("group-recovery", topics=True), env
        return
    broker = TansuBroker(tmp_path).start()
    try:
        create_topics(broker.bootstrap, PARTITIONS, 1)
        yield (
            broker,
            {
                **env,
                # tansu's known defects (tests/integration/tansu.py).
                "PURCHASE_STREAM_PRODUCER_MAX_BATCH_SIZE": "1",
                "PURCHASE_STREAM_BROKER_SESSION_TIMEOUT_S": "6",
                "PURCHASE_STREAM_STATIC_MEMBERSHIP": "false",
            },
        )
    finally:
        broker.stop()


def _drained_within(
    bootstrap: str, group: str, limit: float, workers: list[WorkerProcess]
) -> float:
    """Seconds until the group has committed everything; fails after ``limit``."""
    started = time.monotonic()
    seen: list[Any] = []
    while time.monotonic() - started < limit:
        for w in workers:
            assert w.proc is not None
            if w.proc.poll() is not None:
                raise AssertionError(f"worker died ({w.proc.returncode}):\n{w.log_tail()}")
        try:
            lag: Any = group_lag(bootstrap, group, timeout=5)
        except Exception as exc:  # noqa: BLE001 - coordinator busy: ask again
            lag = repr(exc)
        seen.append((round(time.monotonic() - started, 1), lag, [assigned(w) for w in workers]))
        if lag == 0:
            return time.monotonic() - started
        time.sleep(1)
    logs = "\n---\n".join(w.log_tail(25) for w in workers)
    per_partition = {}
    for topic in GROUP_INPUTS:
        with contextlib.suppress(Exception):
            per_partition[topic] = {
                p: n for p, n in partition_lag(bootstrap, group, topic).items() if n
            }
    raise AssertionError(
        f"group not drained within {limit:.0f} s; (s, lag, assigned) seen: {seen[-10:]}; "
        f"lag per partition: {per_partition}\n{logs}"
    )


def _committed_total(bootstrap: str, group: str) -> int:
    return sum(
        offset or 0
        for topic in GROUP_INPUTS
        for offset in committed_offsets(bootstrap, group, topic).values()
    )


def _resumed_within(
    bootstrap: str, group: str, since: int, limit: float, worker: WorkerProcess
) -> float:
    """Seconds until ``worker`` holds partitions and the group commits past ``since``.

    Resuming is progress, not a drained backlog: on a loaded 2-core machine the drain after
    a takeover was seen to take longer than a minute while it progressed all along.
    """
    started = time.monotonic()
    seen: list[Any] = []
    while time.monotonic() - started < limit:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker died ({worker.proc.returncode}):\n{worker.log_tail()}")
        try:
            total: Any = _committed_total(bootstrap, group)
        except Exception as exc:  # noqa: BLE001 - coordinator busy: ask again
            total = repr(exc)
        held = assigned(worker)
        seen.append((round(time.monotonic() - started, 1), held, total))
        if held > 0 and isinstance(total, int) and total > since:
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(
        f"no progress within {limit:.0f} s; (s, assigned, committed) seen: {seen[-10:]}\n"
        f"{worker.log_tail(40)}"
    )


def test_kill_9_restart_resumes_and_clean_stop_hands_over(
    scenario: tuple[Any, dict[str, str]], tmp_path: Path
) -> None:
    broker, env = scenario
    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "schemas.json").start()
    codec = Codec(ConfluentRegistryClient(registry.url))
    now = int(time.time() * 1000)
    cfg = SimConfig(
        seed=16, households=60, receipts=900, start_ms=now - 900_000, receipts_per_second=2.0
    )
    register, receipts, _changes = phases(list(generate(cfg)))
    group = f"recovery-{uuid.uuid4().hex[:8]}"

    def worker(name: str) -> WorkerProcess:
        # The same state directory on restart: the same derived group.instance.id.
        return WorkerProcess(broker.bootstrap, registry.url, tmp_path / name, group, env)

    workers = [worker("w0").start(), worker("w1").start()]
    try:
        wait_group_stable(workers, PARTITIONS, timeout=180)
        produce_events(broker.bootstrap, codec, register)
        produce_events(broker.bootstrap, codec, receipts[:300])
        _drained_within(broker.bootstrap, group, 240, workers)

        # kill -9: nothing committed, no LeaveGroup; the broker keeps the member.
        killed = workers[0]
        assert killed.proc is not None
        killed.proc.send_signal(signal.SIGKILL)
        killed.proc.wait(timeout=30)
        produce_events(broker.bootstrap, codec, receipts[300:600])
        before = _committed_total(broker.bootstrap, group)
        restarted = worker("w0")
        restarted.log_path = tmp_path / "w0-restarted.log"
        workers[0] = restarted.start()
        took = _resumed_within(broker.bootstrap, group, before, RESUME_WITHIN_S, restarted)
        print(f"resumed {took:.1f} s after the restart")
        took = _drained_within(broker.bootstrap, group, DRAIN_WITHIN_S, workers)
        print(f"drained {took:.1f} s after that")

        # A clean stop for good: the survivor must get every partition.
        assert workers[1].stop() == 0, workers[1].log_tail()
        survivor = workers[:1]
        produce_events(broker.bootstrap, codec, receipts[600:])
        deadline = time.monotonic() + RESUME_WITHIN_S
        while assigned(survivor[0]) != PARTITIONS and time.monotonic() < deadline:
            time.sleep(1)
        assert assigned(survivor[0]) == PARTITIONS, survivor[0].log_tail()
        took = _drained_within(broker.bootstrap, group, DRAIN_WITHIN_S, survivor)
        print(f"drained {took:.1f} s after the other worker stopped")
        assert survivor[0].stop() == 0, survivor[0].log_tail()
    finally:
        for w in workers:
            if w.proc is not None:
                w.stop()
        registry.stop()
