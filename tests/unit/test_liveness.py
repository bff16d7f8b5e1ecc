"""The stall rule behind /healthz (stream/engine/liveness.py StallDetector), on a made-up clock."""

from __future__ import annotations

from stream.engine.liveness import NO_ASSIGNMENT, NOT_ADVANCING, StallDetector
from stream.local.offsets import PartitionOffsets

A = ("pos.receipts", 0)
B = ("pos.receipts", 1)


def offs(**parts: tuple[int | None, int]) -> dict[tuple[str, int], PartitionOffsets]:
    """p0=(committed, high) ... -> readings of pos.receipts partitions (log start 0)."""
    return {("pos.receipts", int(k[1:])): PartitionOffsets(c, 0, h) for k, (c, h) in parts.items()}


def test_partition_offsets_lag_counts_from_log_start_when_nothing_committed() -> None:
    assert PartitionOffsets(None, 5, 12).lag == 7
    assert PartitionOffsets(9, 5, 12).lag == 3
    assert PartitionOffsets(3, 5, 12).lag == 7  # committed below a deleted log start
    assert PartitionOffsets(12, 0, 12).lag == 0


def test_no_partition_while_the_group_lags_and_commits_nothing_is_a_stall() -> None:
    d = StallDetector(stall_after_s=60)
    stuck = offs(p0=(10, 50), p1=(None, 40))
    assert d.observe(0, stuck, set()).ok
    assert d.observe(59, stuck, set()).ok
    h = d.observe(61, stuck, set())
    assert h.stalled == NO_ASSIGNMENT
    assert "holds no input partition for 61 s" in h.reason and "80 records of lag" in h.reason
    # Assigned again: healthy at once (the partitions just taken over start afresh).
    assert d.observe(62, stuck, {A, B}).ok


def test_no_partition_in_a_group_that_progresses_is_not_a_stall() -> None:
    # More workers than partitions: this one idles while the others commit.
    d = StallDetector(stall_after_s=60)
    for t in range(0, 300, 5):
        assert d.observe(t, offs(p0=(t, t + 20)), set()).ok


def test_no_partition_and_no_lag_is_healthy() -> None:
    d = StallDetector(stall_after_s=60)
    for t in range(0, 300, 5):
        assert d.observe(t, offs(p0=(40, 40), p1=(None, 0)), set()).ok


def test_a_held_partition_with_lag_that_commits_nothing_is_a_stall() -> None:
    d = StallDetector(stall_after_s=60)
    assert d.observe(0, offs(p0=(10, 50), p1=(7, 7)), {A, B}).ok
    # p1 without lag never counts; p0 keeps its offset while its lag grows.
    assert d.observe(30, offs(p0=(10, 80), p1=(7, 7)), {A, B}).ok
    h = d.observe(65, offs(p0=(10, 90), p1=(7, 7)), {A, B})
    assert h.stalled == NOT_ADVANCING
    assert h.reason == "pos.receipts[0] committed nothing for 65 s with 80 records of lag"
    # It commits again: healthy, and the clock restarts from there.
    assert d.observe(70, offs(p0=(11, 90), p1=(7, 7)), {A, B}).ok
    assert d.observe(125, offs(p0=(11, 95), p1=(7, 7)), {A, B}).ok
    assert d.observe(131, offs(p0=(11, 95), p1=(7, 7)), {A, B}).stalled == NOT_ADVANCING


def test_a_busy_partition_that_commits_is_healthy_however_long_its_lag() -> None:
    d = StallDetector(stall_after_s=60)
    for t in range(0, 600, 5):
        assert d.observe(t, offs(p0=(t * 10, t * 10 + 5000)), {A}).ok


def test_a_partition_taken_over_starts_its_clock_when_it_arrives() -> None:
    d = StallDetector(stall_after_s=60)
    assert d.observe(0, offs(p0=(5, 9), p1=(3, 30)), {A}).ok
    assert d.observe(50, offs(p0=(9, 9), p1=(3, 30)), {A}).ok
    # p1 has been stuck for 100 s in another worker's hands; here it has been 10 s.
    assert d.observe(100, offs(p0=(9, 9), p1=(3, 30)), {A, B}).ok
    assert d.observe(110, offs(p0=(9, 9), p1=(3, 30)), {A, B}).ok
    assert d.observe(161, offs(p0=(9, 9), p1=(3, 30)), {A, B}).stalled == NOT_ADVANCING


def test_reasons_carry_topics_partitions_and_counts_only() -> None:
    d = StallDetector(stall_after_s=1)
    held = {("customer.cards", p) for p in range(4)} | {("pos.receipts", p) for p in range(4)}
    readings = {tp: PartitionOffsets(1, 0, 5) for tp in held}
    d.observe(0, readings, held)
    h = d.observe(2, readings, held)
    assert h.stalled == NOT_ADVANCING
    assert h.reason == (
        "customer.cards[0], customer.cards[1], customer.cards[2], customer.cards[3], "
        "pos.receipts[0], pos.receipts[1] and 2 more committed nothing for 2 s "
        "with 32 records of lag"
    )


# --- a held partition that crawls or stops: the worker restarts itself ----------------------


def _o(committed: int, high: int) -> PartitionOffsets:
    return PartitionOffsets(committed, 0, high)


def test_a_held_partition_with_lag_that_commits_nothing_is_stuck_after_the_window() -> None:
    from stream.engine.liveness import CrawlWatch

    watch = CrawlWatch(40.0)
    tp = ("pos.receipts", 3)
    assert watch.observe(0.0, {tp: _o(100, 173)}, {tp}) is None
    assert watch.observe(35.0, {tp: _o(100, 180)}, {tp}) is None  # within the window
    assert watch.observe(41.0, {tp: _o(120, 190)}, {tp}) == (tp, 41.0, 20)  # ~0.5 records/s


def test_a_partition_that_keeps_up_or_catches_up_is_not_stuck() -> None:
    from stream.engine.liveness import CrawlWatch

    watch = CrawlWatch(40.0)
    tp = ("pos.receipts", 3)
    watch.observe(0.0, {tp: _o(100, 400)}, {tp})
    assert watch.observe(45.0, {tp: _o(350, 420)}, {tp}) is None  # 250 records in 45 s
    watch.observe(50.0, {tp: _o(420, 420)}, {tp})  # caught up: the window starts again
    assert watch.observe(60.0, {tp: _o(420, 421)}, {tp}) is None
    # A quiet partition: a record or two of lag at every look, each worked off.
    quiet = CrawlWatch(20.0)
    for i in range(10):
        assert quiet.observe(5.0 * i, {tp: _o(10 + i, 12 + i)}, {tp}) is None
    # Not held (another worker's): never this worker's problem.
    assert watch.observe(200.0, {tp: _o(420, 900)}, set()) is None


def test_a_partition_that_stops_after_a_spell_of_progress_is_stuck() -> None:
    # Seen in the full chaos schedule after a broker restart: receipts.identified[2] went
    # from 365 to 461 within seconds, then committed nothing for 150 s with 140 records of
    # lag. Judged against where the partition stood when it first had lag (365, lag 65), it
    # had "worked off its lag", so the worker was never restarted.
    from stream.engine.liveness import CrawlWatch

    watch = CrawlWatch(25.0)
    tp = ("receipts.identified", 2)
    assert watch.observe(0.0, {tp: _o(365, 430)}, {tp}) is None
    assert watch.observe(10.0, {tp: _o(461, 480)}, {tp}) is None  # fast progress
    assert watch.observe(30.0, {tp: _o(461, 560)}, {tp}) is None  # the window had progress
    # The last 25 s and more (since the look at 10 s) without a record committed.
    assert watch.observe(50.0, {tp: _o(461, 590)}, {tp}) == (tp, 40.0, 0)


def test_a_worker_is_not_judged_stuck_on_what_it_saw_while_it_was_recovering() -> None:
    """make bench (the national state): a worker ended a two-minute table recovery and was
    stopped as stuck two seconds later, on looks taken while it recovered; the next start
    would have recovered again. Only what follows the recovery counts."""
    import asyncio

    from stream.engine.liveness import LivenessMonitor
    from stream.engine.metrics import Metrics

    tp = ("customer.cards", 0)
    now = [0.0]
    recovering = [True]
    stopped: list[str] = []

    class _Monitor(LivenessMonitor):
        def _read(self) -> dict[tuple[str, int], PartitionOffsets]:
            return {tp: _o(0, 50)}  # lag, nothing committed

        def _owned(self) -> set[tuple[str, int]]:
            return {tp}

    monitor = _Monitor(
        None,
        Metrics(),
        "unused:9092",
        "group",
        ("customer.cards",),
        1,
        stall_after_s=1000.0,
        clock=lambda: now[0],
        restart_stuck_after_s=25.0,
        on_stuck=stopped.append,
        may_restart=lambda: not recovering[0],
        recovering=lambda: recovering[0],
    )
    for t in range(0, 120, 5):  # two minutes of recovery
        now[0] = float(t)
        asyncio.run(monitor.check())
    recovering[0] = False
    for t in range(120, 145, 5):  # recovered: under the window since
        now[0] = float(t)
        asyncio.run(monitor.check())
    assert stopped == []
    now[0] = 150.0  # 30 s after the recovery, still nothing committed: stuck
    asyncio.run(monitor.check())
    assert len(stopped) == 1 and "customer.cards[0] committed 0 records" in stopped[0]
