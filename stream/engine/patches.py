"""Where purchase-stream relies on a library's internals (with stream/engine/store_patches.py).

faust-streaming, mode and aiokafka are pinned exactly in pyproject.toml, and each function
here has a test in tests/unit/test_patches.py that fails when an upgrade changes the
attribute, signature or behaviour it relies on -- before a worker misbehaves. Each one says
why a public API does not do the job (what was measured or seen). Nothing outside this
module and store_patches.py touches a library's ``_private`` names (ruff SLF001 checks
it; these two modules are its exceptions).

The patches of library classes (:func:`strict_producer_flush`, :func:`idle_fetch_wait`,
:func:`static_member_leaves_on_stop`, :func:`one_ack_per_offset`,
:func:`retry_failed_commits`) are idempotent and process-wide: they change the
class, so every app in the process gets them (the worker applies them before it builds
its app).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError

log = logging.getLogger(__name__)

# -- confluent-kafka's local error codes ----------------------------------------------------
# Not internals: librdkafka's client-side error codes (RD_KAFKA_RESP_ERR__*), which the
# Python client exposes with a leading underscore. Named here once so that the code that
# compares with them needs no private-looking attribute.
PARTITION_EOF: int = KafkaError._PARTITION_EOF
TRANSPORT: int = KafkaError._TRANSPORT
ALL_BROKERS_DOWN: int = KafkaError._ALL_BROKERS_DOWN
TIMED_OUT: int = KafkaError._TIMED_OUT
MSG_TIMED_OUT: int = KafkaError._MSG_TIMED_OUT
RESOLVE: int = KafkaError._RESOLVE
FATAL: int = KafkaError._FATAL


# -- faust: the producer buffer's flush before a commit --------------------------------------


def strict_producer_flush() -> None:
    """Make Faust's producer-buffer flush wait until the buffer is really empty.

    Faust flushes its send buffer (the API's audit records; stage outputs and changelogs
    go through stream/engine/output.py, whose flush is chained to this one) before it commits
    offsets, but ``ProducerBuffer.flush`` gives up as soon as 0.1 s pass without a message
    sent -- on a loaded machine that happens with messages still buffered, the offsets are
    committed anyway, and the outputs are lost if the worker then stops (seen: a receipt
    consumed by card_join whose ``receipts.identified`` record never reached the broker after
    a SIGTERM). No setting changes that timeout, and the buffer has no public "in flight"
    count: the one message ``_send_pending`` is handing to the client is invisible to
    ``size``. So ``_send_pending`` is wrapped to count it, and the flush returns only when no
    message is buffered and none is on its way into the client (aiokafka's accumulator is
    flushed after it, completely, by Faust). A buffer that can no longer send raises instead,
    and the commit does not happen: the records are read again after a restart.

    Relies on (tests/unit/test_patches.py): ``ProducerBuffer._send_pending(self, fut)`` is
    what ``_handle_pending`` awaits for each message before it sets ``message_sent``, and
    ``flush()`` is what ``Producer.flush`` awaits.
    """
    from faust.transport.producer import ProducerBuffer

    if getattr(ProducerBuffer, "_purchase_stream_strict", False):
        return
    send_pending = ProducerBuffer._send_pending

    async def _send_pending(self: Any, fut: Any) -> None:
        self._ps_in_flight = getattr(self, "_ps_in_flight", 0) + 1
        try:
            await send_pending(self, fut)
        finally:
            self._ps_in_flight -= 1

    async def flush(self: Any) -> None:
        while self.size or getattr(self, "_ps_in_flight", 0):
            if self.state != "running":
                raise RuntimeError(f"cannot flush: producer buffer {self.state} with messages")
            self.message_sent.clear()
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
            except TimeoutError:
                continue

    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = flush  # type: ignore[method-assign]
    ProducerBuffer._purchase_stream_strict = True  # type: ignore[attr-defined]


# -- aiokafka: the fetch loop against a broker that does not long-poll -----------------------

# The shortest time between two fetch requests of the worker's consumer when the first
# came back empty (see idle_fetch_wait).
IDLE_FETCH_WAIT_S = 0.01


def idle_fetch_wait(seconds: float = IDLE_FETCH_WAIT_S) -> None:
    """Make aiokafka wait before re-fetching after an empty fetch that came back early.

    Kafka holds a fetch until data arrives or ``fetch_max_wait_ms`` passes (Faust asks for
    1.5 s), so an idle consumer sends a request or so a second. The embedded noida-db
    ignores the wait and answers at once: aiokafka then re-fetches in a tight loop, ~2 400
    requests a second from one consumer on an idle topic (measured), which cost a worker's
    consumer thread ~0.45 of a core and the broker as much again, even while the worker had
    nothing to do -- on 2 cores, CPU taken from the processing itself
    (benchmarks/results/2026-12-07-diary.md, section 1).
    aiokafka has no public back-off for empty fetches (``fetch_min_bytes`` only asks the
    broker, which ignores it too). Here a fetch that returned no records sooner than
    ``seconds`` after it was sent is followed by a pause for the rest of ``seconds``: no
    effect against a broker that long-polls (its empty answers take ``fetch_max_wait_ms``),
    and at most ``seconds`` more latency for the first record after a quiet spell on one
    that does not.

    Relies on (tests/unit/test_patches.py): ``Fetcher._fetch_requests_routine`` starts one
    ``self._proc_fetch_request(assignment, node_id, request)`` per request, which returns
    whether it got records, and ``assignment.active`` says whether the assignment is current.
    """
    from aiokafka.consumer.fetcher import Fetcher

    Fetcher._ps_idle_fetch_wait_s = seconds
    if getattr(Fetcher, "_ps_idle_fetch_wait_patched", False):
        return
    proc = Fetcher._proc_fetch_request

    async def _proc_fetch_request(self: Any, assignment: Any, node_id: Any, request: Any) -> Any:
        started = time.monotonic()
        got_records = await proc(self, assignment, node_id, request)
        if not got_records and assignment.active:
            rest = Fetcher._ps_idle_fetch_wait_s - (time.monotonic() - started)
            if rest > 0:
                try:
                    await asyncio.sleep(rest)
                except asyncio.CancelledError:
                    # Closing or unassigned: like aiokafka's own fetch task, end quietly
                    # (Fetcher.close() awaits the cancelled task).
                    return got_records
        return got_records

    Fetcher._proc_fetch_request = _proc_fetch_request
    Fetcher._ps_idle_fetch_wait_patched = True


# -- aiokafka: LeaveGroup for a static member ------------------------------------------------

# aiokafka's own ``GroupCoordinator._maybe_leave_group``, kept once patched (the test pins
# what it does).
ORIGINALS: dict[str, Any] = {}


def static_member_leaves_on_stop() -> None:
    """Make aiokafka's consumer send LeaveGroup on close for a static member too.

    Why (stream/engine/membership.py): aiokafka, like the Java client, sends no LeaveGroup
    for a static member, and noida-db never evicts a member: a worker stopped cleanly and
    not started again would keep its partitions for ever. aiokafka has no option for it.
    Patches ``aiokafka.consumer.group_coordinator.GroupCoordinator._maybe_leave_group``
    (aiokafka 0.14: it sends ``LeaveGroupRequest(group, member_id)`` only when
    ``_group_instance_id is None``). The request is the same v0/v1 LeaveGroup a dynamic
    member sends, naming the member id the broker gave this static member; noida-db and
    Kafka remove the member and rebalance. A crash sends nothing, and the restart then takes
    over the dead member by its instance id.

    Relies on (tests/unit/test_patches.py): the original's behaviour for dynamic and static
    members, the coordinator's ``generation``, ``group_id``, ``member_id``, ``_send_req`` and
    ``reset_generation``, and that aiokafka's close path calls ``_maybe_leave_group``.
    """
    from aiokafka.consumer import group_coordinator as gc

    coordinator = gc.GroupCoordinator
    if getattr(coordinator, "_ps_static_leave", False):
        return
    ORIGINALS["GroupCoordinator._maybe_leave_group"] = coordinator._maybe_leave_group

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


# -- faust: the offset a commit writes -------------------------------------------------------


def one_ack_per_offset() -> None:
    """Faust's ``Consumer._new_offset`` without repeated offsets: a partition's commit must
    not crawl after a rebalance.

    Faust commits the first run of consecutive offsets in ``Consumer._acked[tp]``. At the
    end of a rebalance its recovery resumes the partitions *before* it seeks them to the
    committed offset (faust/tables/recovery.py, ``resume_partitions`` then ``perform_seek``),
    so records from the committed offset on are processed and acked; when the seek lands,
    the read offset goes back to the committed one and the rest of the batch in flight looks
    like a jump, so ``_add_gap`` records a gap over offsets that were already acked.
    ``_new_offset`` then merges the gap into ``acked`` without checking ``_acked_index``:
    every offset there twice ends a run, and each commit (every 2.8 s) moved the partition on
    by exactly one record -- the "partition that crawls after a rebalance" of the chaos
    suite (58-90 s, until the repeats were used up; reproduced with two workers and kill -9,
    and through Faust's own bookkeeping in tests/unit/test_patches.py).

    Here the merged list holds each offset once, the merged gap offsets enter
    ``_acked_index``, and a gap counts as done only up to the highest offset acked (Faust
    counts the whole interval; the worker reads a gap's records back and processes them
    before it acks the record after the gap, stream/engine/offsets.py, so nothing beyond the
    highest acked offset is known to be done). Acked offsets below the committed one (acked
    before the seek rewound them) are dropped. Faust's tolerance of one missing offset at the
    head stays. There is no public hook for the commit's offset choice, hence the
    replacement; faust-streaming is pinned and the test fails when its method changes.
    """
    from faust.transport.consumer import Consumer
    from faust.utils.functional import consecutive_numbers

    if getattr(Consumer, "_ps_one_ack_per_offset", False):
        return

    def _new_offset(self: Any, tp: Any) -> int | None:
        new = _new_acked_offset(self, tp)
        # A commit that failed (retry_failed_commits) is offered again, never backwards.
        retry: int | None = self.__dict__.get("_ps_uncommitted", {}).pop(tp, None)
        committed = self._committed_offset[tp]
        if retry is not None and (committed is None or retry > committed):
            return retry if new is None else max(new, retry)
        return new

    def _new_acked_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        if not acked:
            return None
        highest = max(acked)
        gaps = self._gap[tp]
        if gaps:
            filled: set[int] = set()
            for entry in gaps.overlap(0, highest + 1):
                filled.update(range(entry.begin, min(entry.end, highest + 1)))
            if filled:
                gaps.chop(0, highest + 1)
                self._acked_index[tp].update(filled)
                acked.extend(filled)
        acked[:] = sorted(set(acked))
        committed = self._committed_offset[tp]
        if committed:
            stale = [o for o in acked if o < committed]
            if stale:
                acked[:] = [o for o in acked if o >= committed]
                self._acked_index[tp].difference_update(stale)
            if not acked or min(acked) - committed > 1:
                return None
        batch = next(consecutive_numbers(acked))
        acked[: len(batch)] = []
        self._acked_index[tp].difference_update(batch)
        return int(batch[-1]) + 1

    Consumer._ps_faust_new_offset = Consumer._new_offset  # type: ignore[attr-defined]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    Consumer._ps_one_ack_per_offset = True  # type: ignore[attr-defined]


def retry_failed_commits() -> None:
    """Faust's ``Consumer._commit_offsets`` records offsets as committed even when the commit
    failed; here a failed commit is retried at the next commit instead.

    faust-streaming 0.15.3 ends ``_commit_offsets`` with ``self._committed_offset.update(...)``
    whatever ``did_commit`` says, and ``_new_offset`` has already consumed those acks: the
    partition then commits again only when a *newer* record is acked. A commit that failed
    around a broker restart (``UnknownMemberIdError``) left a partition's group offset 140
    records behind for minutes while every record had been processed (the full chaos
    schedule, seed 4742): its lag never went down, and a quiet partition would keep that lag
    until its next record. Here the committed offsets of a failed commit are put back and the
    offset is kept per partition (``Consumer._ps_uncommitted``); :func:`one_ack_per_offset`'s
    ``_new_offset`` offers it again at the next commit (only if it is still above what the
    consumer last committed or read back at an assignment, so never backwards).
    """
    from faust.transport.consumer import Consumer

    if getattr(Consumer, "_ps_retry_failed_commits", False):
        return
    commit_offsets = Consumer._commit_offsets

    async def _commit_offsets(
        self: Any, offsets: Mapping[Any, int], start_new_transaction: bool = True
    ) -> bool:
        before = {tp: self._committed_offset[tp] for tp in offsets}
        did_commit: bool = await commit_offsets(
            self, offsets, start_new_transaction=start_new_transaction
        )
        uncommitted = self.__dict__.setdefault("_ps_uncommitted", {})
        if did_commit:
            for tp in offsets:
                uncommitted.pop(tp, None)
            return did_commit
        assignment = self.assignment()
        for tp, offset in offsets.items():
            self._committed_offset[tp] = before[tp]
            if tp in assignment:
                uncommitted[tp] = max(offset, uncommitted.get(tp, offset))
        return did_commit

    ORIGINALS["Consumer._commit_offsets"] = commit_offsets
    Consumer._commit_offsets = _commit_offsets  # type: ignore[method-assign]
    Consumer._ps_retry_failed_commits = True  # type: ignore[attr-defined]


# -- faust: the consumer's committed offsets --------------------------------------------------


def committed_offsets(consumer: Any) -> Mapping[Any, int | None]:
    """The offset this worker's Faust consumer last committed, per assigned partition.

    Consumer lag (stream/engine/observability.py) is end offset minus committed offset. The
    public ways to get the committed offsets (aiokafka's ``committed()``, an admin request)
    ask the broker, one round trip per partition per collection; Faust already holds them in
    ``Consumer._committed_offset`` (a mapping that answers None for a partition with no
    commit yet), updated on every commit. Empty for a consumer that keeps none.
    """
    committed: Mapping[Any, int | None] = getattr(consumer, "_committed_offset", {})
    return committed


# -- aiohttp (Faust's web server): the parser's line limits -----------------------------------


def http_parser_limits(web: Any, max_line_size: int, max_field_size: int) -> None:
    """Set aiohttp's request-line and header-field limits on Faust's web server.

    aiohttp answers a line over its parser limit (8,190 bytes) with a 400 of its own, before
    any middleware, and logs the line's first bytes (a path with a customer id in it) at
    ERROR. Faust builds the aiohttp ``AppRunner`` itself (``faust.web.drivers.aiohttp.Web
    ._runner``) without a way to pass its handler arguments, so they are added to the
    runner's ``BaseRunner._kwargs``, which it passes to the ``Server`` it makes at start.
    Must run before the web server starts. tests/unit/test_patches.py pins both attributes
    and that the server made gets the limits; tests/integration/test_api_edge.py checks a
    100 KB path gets 414 with its audit record.
    """
    runner = web._runner
    runner._kwargs.update(max_line_size=max_line_size, max_field_size=max_field_size)
