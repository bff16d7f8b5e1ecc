"""Is this worker's consumer group making progress? The verdict behind ``/healthz``.

Issue 16: a worker restarted after ``kill -9`` sat in the group's join loop for minutes with
no partition, and nothing showed it -- ``/healthz`` said ok, and the consumer-lag gauges
cover only partitions the worker holds, so there were none. Here the group's *committed*
offsets and the partitions' watermarks are read from the broker (stream/local/offsets.py
``GroupOffsets``: not through the worker's consumer, which has nothing to say while it
holds no partition), for every partition the group consumes, whether or not this worker
holds it, every ``COLLECT_INTERVAL_S``.

A worker is **stalled** when, for longer than ``settings.stall_after_s``,

- ``no_assignment``: it holds no input partition while its group has lag and no committed
  offset of the group moves (a worker with nothing to do in a group that progresses, e.g.
  more workers than partitions, is not stalled); or
- ``not_advancing``: a partition it holds has lag and its committed offset does not move.

It then answers ``/healthz`` with 503 and the reason, sets
``purchase_stream_stalled{reason}`` to 1 (alert ``PurchaseStreamWorkerStalled``,
docs/runbook.md) and logs the change once. Reasons name topics, partition numbers and
record counts only: no customer, card or household id.

:class:`StallDetector` is the pure rule (unit-tested with made-up clocks);
:class:`LivenessMonitor` feeds it from a running worker.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from stream.engine.metrics import Metrics
from stream.local.offsets import GroupOffsets, PartitionOffsets

log = logging.getLogger(__name__)

NO_ASSIGNMENT = "no_assignment"
NOT_ADVANCING = "not_advancing"
STALL_REASONS = (NO_ASSIGNMENT, NOT_ADVANCING)

TP = tuple[str, int]


@dataclass(frozen=True)
class Health:
    stalled: str | None = None  # one of STALL_REASONS, None = healthy
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.stalled is None


@dataclass
class StallDetector:
    """Turns successive offset readings into a verdict; no I/O, the caller passes ``now``."""

    stall_after_s: float
    _committed: dict[TP, int | None] = field(default_factory=dict)
    # When the group last made progress (any committed offset moved, or it had no lag).
    _group_progress: float | None = None
    # Per held partition with lag: since when its committed offset has not moved.
    _still_since: dict[TP, float] = field(default_factory=dict)
    _idle_since: float | None = None

    def observe(self, now: float, offsets: dict[TP, PartitionOffsets], owned: set[TP]) -> Health:
        moved = {
            tp for tp, o in offsets.items() if self._committed.get(tp, o.committed) != o.committed
        }
        self._committed = {tp: o.committed for tp, o in offsets.items()}
        group_lag = sum(o.lag for o in offsets.values())
        if moved or group_lag == 0 or self._group_progress is None:
            self._group_progress = now

        held = {tp: offsets[tp] for tp in owned if tp in offsets}
        # A partition just taken over, or whose offset moved, or without lag, starts afresh.
        self._still_since = {
            tp: (now if tp in moved or tp not in self._still_since else self._still_since[tp])
            for tp, o in held.items()
            if o.lag > 0
        }

        if held:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        if not held and group_lag > 0:
            idle_since = now if self._idle_since is None else self._idle_since
            since = max(idle_since, self._group_progress)
            if now - since >= self.stall_after_s:
                return Health(
                    NO_ASSIGNMENT,
                    f"holds no input partition for {now - since:.0f} s while its group has "
                    f"{group_lag} records of lag and commits nothing",
                )
        stuck = sorted(tp for tp, t in self._still_since.items() if now - t >= self.stall_after_s)
        if stuck:
            worst = max(now - self._still_since[tp] for tp in stuck)
            names = ", ".join(f"{t}[{p}]" for t, p in stuck[:6])
            more = f" and {len(stuck) - 6} more" if len(stuck) > 6 else ""
            lag = sum(held[tp].lag for tp in stuck)
            return Health(
                NOT_ADVANCING,
                f"{names}{more} committed nothing for {worst:.0f} s with {lag} records of lag",
            )
        return Health()


# A held partition with lag that advances slower than this (records per second, averaged
# over the restart window) counts as stuck: the fault seen crawled at about one a second.
MIN_PROGRESS_PER_S = 2.0


@dataclass
class CrawlWatch:
    """Per held partition with lag: its committed offset and lag at each look.

    Stuck: over the last window the partition had lag at every look and worked off less than
    the lag it had at the window's start, at under :data:`MIN_PROGRESS_PER_S`. The window
    slides: a partition judged from the start of its lag instead, one that raced ahead and
    then stopped dead, looked healthy for ever (the full chaos schedule, after a broker
    restart: 365 -> 461 in seconds, then nothing for 150 s, and no restart).
    """

    window_s: float
    # (time, committed, lag) per look, from the last look at or before the window's start.
    _looks: dict[TP, list[tuple[float, int, int]]] = field(default_factory=dict)

    def observe(
        self, now: float, offsets: dict[TP, PartitionOffsets], owned: set[TP]
    ) -> tuple[TP, float, int] | None:
        """The worst stuck partition: (tp, seconds, records it advanced), or None."""
        held = {tp: offsets[tp] for tp in owned if tp in offsets}
        looks: dict[TP, list[tuple[float, int, int]]] = {}
        for tp, o in held.items():
            if o.lag <= 0:
                continue  # caught up: a new lag starts a new history
            seen = self._looks.get(tp, [])
            seen.append((now, o.committed or 0, o.lag))
            while len(seen) >= 2 and seen[1][0] <= now - self.window_s:
                seen.pop(0)
            looks[tp] = seen
        self._looks = looks
        worst = None
        for tp, seen in looks.items():
            since, start, lag_then = seen[0]
            seconds = now - since
            advanced = seen[-1][1] - start
            slow = seconds >= self.window_s and advanced < min(
                lag_then, MIN_PROGRESS_PER_S * seconds
            )
            if slow and (worst is None or seconds > worst[1]):
                worst = (tp, seconds, advanced)
        return worst

    def reset(self) -> None:
        """Forget every partition's history: what follows is judged on its own."""
        self._looks = {}


class LivenessMonitor:
    """Reads the group's offsets periodically and keeps the worker's :class:`Health`.

    Runs as its own task from the moment the app starts (:meth:`run`), not as a Faust timer:
    Faust starts timers and tasks only once the tables have recovered, which needs a first
    assignment -- in the stall of issue 16 that never came, and a timer never ran (seen:
    no lag series, /healthz ok, for the whole stall). The web server is up before that.
    """

    def __init__(
        self,
        app: Any,
        metrics: Metrics,
        bootstrap: str,
        group: str,
        topics: tuple[str, ...],
        partitions: int,
        stall_after_s: float,
        clock: Any = None,
        restart_stuck_after_s: float = 0.0,
        on_stuck: Any = None,
        may_restart: Any = None,
        recovering: Any = None,
    ) -> None:
        import time

        self.app = app
        self.metrics = metrics
        self.topics = topics
        self._reader_args = (bootstrap, group, topics, partitions)
        self._reader: GroupOffsets | None = None
        self.detector = StallDetector(stall_after_s)
        self.health = Health()
        # A held partition with lag that commits nothing for this long, while the worker is
        # neither restoring nor rebalancing nor waiting for the schema registry, makes the
        # worker stop (``on_stuck``) so that its supervisor starts it afresh: seen under
        # faults, one partition's fetching stopped after a rebalance with every thread idle
        # (docs/reliability.md), and only a new consumer got it going. 0 = never.
        self.restart_stuck_after_s = restart_stuck_after_s
        self.crawl = CrawlWatch(restart_stuck_after_s)
        self.on_stuck = on_stuck
        self.may_restart = may_restart or (lambda: True)
        self.recovering = recovering or (lambda: False)
        self._clock = clock or time.monotonic
        for reason in STALL_REASONS:
            metrics.stalled.labels(reason).set(0)

    def _read(self) -> dict[TP, PartitionOffsets]:
        if self._reader is None:
            self._reader = GroupOffsets(*self._reader_args)
        return self._reader.read()

    async def run(self, interval: float) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - liveness must never stop the worker
                self.metrics.collect_errors.inc()
                log.warning("liveness check failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(interval)

    def _owned(self) -> set[TP]:
        from faust.exceptions import ConsumerNotStarted

        try:
            assignment = self.app.consumer.assignment()
        except ConsumerNotStarted:
            # The app starts this check before its consumer: it holds nothing yet.
            return set()
        return {(tp.topic, tp.partition) for tp in assignment if tp.topic in self.topics}

    async def check(self) -> None:
        try:
            offsets = await asyncio.wait_for(asyncio.to_thread(self._read), 20)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - liveness must never stop the worker
            # The previous verdict stays: a broker we cannot ask is not evidence either way.
            self.metrics.collect_errors.inc()
            log.warning(
                "liveness: cannot read the group's offsets: %s: %s", type(exc).__name__, exc
            )
            return
        for (topic, partition), o in offsets.items():
            self.metrics.group_lag.labels(topic, str(partition)).set(o.lag)
        owned = self._owned()
        # Also here (the collector sets it too, but only once Faust has started its timers):
        # a worker stuck before its first assignment shows 0, not nothing.
        for topic in self.topics:
            self.metrics.assigned_partitions.labels(topic).set(
                sum(1 for t, _p in owned if t == topic)
            )
        health = self.detector.observe(self._clock(), offsets, owned)
        if health.stalled != self.health.stalled:
            if health.ok:
                log.info("liveness: progressing again")
            else:
                log.warning("liveness: stalled (%s): %s", health.stalled, health.reason)
        self.health = health
        for reason in STALL_REASONS:
            self.metrics.stalled.labels(reason).set(1 if health.stalled == reason else 0)
        if self.restart_stuck_after_s > 0 and self.on_stuck is not None:
            if self.recovering():
                # Restoring tables: no partition advances meanwhile, and those looks are no
                # evidence afterwards. Kept, they made a worker that had just finished a
                # two-minute table recovery stop as stuck two seconds later (make bench,
                # the national state), and the next start would have recovered again.
                # Only recovery: across rebalances and registry waits the history is kept,
                # as the restart after a broker restart relies on (docs/reliability.md).
                self.crawl.reset()
                return
            worst = self.crawl.observe(self._clock(), offsets, owned)
            if worst is not None and self.may_restart():
                (topic, partition), seconds, advanced = worst
                self.on_stuck(
                    f"{topic}[{partition}] committed {advanced} records in {seconds:.0f} s "
                    "with lag all along"
                )
