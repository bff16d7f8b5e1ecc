"""Every library behaviour stream/engine/patches.py relies on, pinned.

faust-streaming, mode and aiokafka are pinned exactly in pyproject.toml; when one of them is
upgraded, these fail before a worker misbehaves: each test checks that the internal the
patch uses is there, has the signature it calls, and behaves as the patch assumes -- and
that the patched behaviour is what the worker needs.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.consumer import group_coordinator as gc
from aiokafka.consumer.fetcher import Fetcher
from confluent_kafka import KafkaError
from faust.sensors.monitor import Monitor
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.producer import ProducerBuffer
from prometheus_client import CollectorRegistry

from stream.engine import patches, store_patches
from stream.engine.observability import faust_sensors
from stream.engine.output import attach


def _params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


# -- strict_producer_flush ---------------------------------------------------------------


class _App:
    class conf:  # noqa: N801 - the shape of faust's app.conf the buffer reads
        producer_threaded = False


def _buffer() -> Any:
    buffer = ProducerBuffer()
    buffer.app = _App()  # type: ignore[assignment]
    return buffer


def test_faust_buffer_sends_through_send_pending_then_signals_message_sent() -> None:
    # What the patch wraps: the per-message send the buffer's task awaits, then the event.
    source = inspect.getsource(ProducerBuffer)
    assert "send_pending = self._send_pending" in source
    assert "await send_pending(msg)" in source
    assert "self.message_sent.set()" in source
    assert _params(ProducerBuffer._send_pending) == ["self", "fut"]
    assert inspect.iscoroutinefunction(ProducerBuffer.flush)
    # The kafka:// producer's flush (what the commit awaits) flushes the buffer, then
    # aiokafka's own accumulator.
    from faust.transport.drivers.aiokafka import Producer

    source = inspect.getsource(Producer.flush)
    assert source.index("await self.buffer.flush()") < source.index("await self._producer.flush()")


def test_strict_flush_waits_for_the_message_in_flight() -> None:
    patches.strict_producer_flush()
    patches.strict_producer_flush()  # idempotent

    async def scenario() -> list[str]:
        buffer = _buffer()
        buffer._started.set()  # mode's "running" without starting the buffer's own task
        assert buffer.state == "running"
        events: list[str] = []
        release = asyncio.Event()

        class Channel:
            async def publish_message(self, fut: Any, wait: bool = False) -> None:
                await release.wait()
                events.append("sent")

        class Fut:
            class message:  # noqa: N801 - FutureMessage.message.channel
                channel = Channel()

        # A message taken off the queue and being handed to the client: size is 0.
        sending = asyncio.ensure_future(buffer._send_pending(Fut()))
        await asyncio.sleep(0)
        assert buffer.size == 0
        flushing = asyncio.ensure_future(buffer.flush())
        await asyncio.sleep(0.3)  # Faust's own flush would have returned (0.1 s idle)
        assert not flushing.done()
        release.set()
        await sending
        buffer.message_sent.set()
        await asyncio.wait_for(flushing, 1)
        events.append("flushed")
        return events

    assert asyncio.run(scenario()) == ["sent", "flushed"]


def test_faust_commits_only_after_flushing_the_producer() -> None:
    # stream/engine/output.py's attach() chains its flush to app.producer.flush on this.
    faust_commit = patches.ORIGINALS.get("Consumer._commit_offsets", FaustConsumer._commit_offsets)
    source = inspect.getsource(faust_commit)
    assert source.index("await self.app.producer.flush()") < source.index(
        "await self._commit(committable_offsets)"
    )
    # and committed offsets are kept where patches.committed_offsets reads them
    assert "self._committed_offset.update(committable_offsets)" in source


def test_attach_chains_the_output_flush_to_fausts() -> None:
    calls: list[str] = []

    class Producer:
        async def flush(self) -> None:
            calls.append("faust")

    class App:
        producer = Producer()

    class FakeOutput:
        async def flush(self) -> None:
            calls.append("output")

    app = App()
    attach(app, FakeOutput())  # type: ignore[arg-type]
    asyncio.run(app.producer.flush())
    assert calls == ["faust", "output"]


# -- idle_fetch_wait ---------------------------------------------------------------------


def test_aiokafka_fetch_loop_starts_proc_fetch_request_per_request() -> None:
    source = inspect.getsource(Fetcher._fetch_requests_routine)
    assert "self._proc_fetch_request(assignment, node_id, request)" in source
    # its result says whether records came (waiters are woken on a true one)
    assert "has_new_data = any(fut.result() for fut in done_pending)" in source
    assert _params(Fetcher._proc_fetch_request) == ["self", "assignment", "node_id", "request"]


class _Assignment:
    def __init__(self, active: bool) -> None:
        self.active = active


class _CancelledClient:
    async def send(self, node_id: Any, request: Any) -> Any:
        raise asyncio.CancelledError  # aiokafka's own answer: False, at once


class _FakeFetcher:
    _client = _CancelledClient()


def _timed_fetch(active: bool) -> tuple[Any, float]:
    async def run() -> tuple[Any, float]:
        started = time.monotonic()
        got = await Fetcher._proc_fetch_request(
            _FakeFetcher(),  # type: ignore[arg-type]
            _Assignment(active),
            0,
            None,
        )
        return got, time.monotonic() - started

    return asyncio.run(run())


def test_an_empty_fetch_that_returned_early_waits_the_rest_of_the_interval() -> None:
    patches.idle_fetch_wait(0.2)
    try:
        got, took = _timed_fetch(active=True)
        assert got is False and took >= 0.19
        # Unassigned meanwhile: no wait.
        got, took = _timed_fetch(active=False)
        assert got is False and took < 0.1
    finally:
        patches.idle_fetch_wait()
    assert Fetcher._ps_idle_fetch_wait_s == patches.IDLE_FETCH_WAIT_S


# -- static_member_leaves_on_stop --------------------------------------------------------


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
    patches.static_member_leaves_on_stop()
    original = patches.ORIGINALS["GroupCoordinator._maybe_leave_group"]
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
    asyncio.run(gc.GroupCoordinator._maybe_leave_group(fake))  # type: ignore[arg-type]
    assert fake.sent == [] and fake.reset
    # aiokafka's close path is what calls it.
    assert "await self._maybe_leave_group()" in inspect.getsource(gc.GroupCoordinator.close)


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


# -- partition_db, open_partition_dbs, committed_offsets ---------------------------------


def _app(tmp_path: Path) -> faust.App:
    return faust.App(
        "patches-test", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path)
    )


def test_partition_databases_of_a_rocksdb_table(tmp_path: Path) -> None:
    app = _app(tmp_path)
    table = app.Table("t", partitions=4, key_type=bytes, value_type=bytes)
    assert store_patches.open_partition_dbs(table) == {}
    db = store_patches.partition_db(table, 2)
    db.put(b"k", b"v")
    assert store_patches.partition_db(table, 2) is db  # the one Faust keeps open
    assert store_patches.open_partition_dbs(table) == {2: db}
    # Faust's own reads find what was written there (the same database).
    assert table.data._get_bucket_for_key(b"k") is not None
    assert table.data.partition_path(2).is_dir()


def test_committed_offsets_of_fausts_consumer(tmp_path: Path) -> None:
    from faust.types import TP

    consumer = _app(tmp_path).consumer
    committed = patches.committed_offsets(consumer)
    assert committed.get(TP("pos.receipts", 0)) is None
    consumer._committed_offset[TP("pos.receipts", 0)] = 41
    assert patches.committed_offsets(consumer)[TP("pos.receipts", 0)] == 41
    assert patches.committed_offsets(object()) == {}


# -- http_parser_limits ------------------------------------------------------------------


def test_the_parser_limits_reach_the_server_faust_starts(tmp_path: Path) -> None:
    from aiohttp.web_protocol import RequestHandler

    assert {"max_line_size", "max_field_size"} <= set(_params(RequestHandler.__init__))
    app = _app(tmp_path)

    async def server_kwargs() -> dict[str, Any]:
        patches.http_parser_limits(app.web, 12_345, 23_456)
        runner = app.web._runner
        await runner.setup()
        try:
            return dict(runner.server._kwargs)  # type: ignore[union-attr]
        finally:
            await runner.cleanup()

    kwargs = asyncio.run(server_kwargs())
    assert kwargs["max_line_size"] == 12_345
    assert kwargs["max_field_size"] == 23_456


# -- faust_sensors (public API, but overriding hooks by name) ----------------------------


def test_the_lean_monitor_overrides_hooks_faust_has(tmp_path: Path) -> None:
    app = _app(tmp_path)
    faust_sensors(app, CollectorRegistry())
    lean = type(app.monitor)
    overridden = [name for name in vars(lean) if name.startswith("on_")]
    assert len(overridden) == 9
    for name in overridden:
        base = getattr(Monitor, name)
        assert _params(getattr(lean, name)) == _params(base), name
    # a silenced hook does nothing; the ones kept still count
    app.monitor.on_message_in(None, 0, None)
    assert app.monitor.messages_received_total == 0


# -- confluent-kafka's local error codes -------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (patches.PARTITION_EOF, "_PARTITION_EOF"),
        (patches.TRANSPORT, "_TRANSPORT"),
        (patches.ALL_BROKERS_DOWN, "_ALL_BROKERS_DOWN"),
        (patches.TIMED_OUT, "_TIMED_OUT"),
        (patches.MSG_TIMED_OUT, "_MSG_TIMED_OUT"),
        (patches.RESOLVE, "_RESOLVE"),
        (patches.FATAL, "_FATAL"),
    ],
)
def test_local_error_codes(code: int, name: str) -> None:
    assert KafkaError(code).name() == name


# -- one_ack_per_offset ----------------------------------------------------------------------


class _Topics:
    def acks_enabled_for(self, topic: str) -> bool:
        return True


class _Message:
    def __init__(self, tp: Any, offset: int) -> None:
        self.acked = False
        self.tp = tp
        self.topic = tp.topic
        self.offset = offset


def _bookkeeping(new_offset: Any) -> Any:
    """Faust's own offset bookkeeping (ack, _add_gap, _should_commit) on a bare object, with
    ``new_offset`` as the commit's offset choice."""
    from collections import defaultdict
    from types import SimpleNamespace

    from intervaltree import IntervalTree

    c = SimpleNamespace(
        _gap=defaultdict(IntervalTree),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _read_offset=defaultdict(lambda: None),
        _committed_offset=defaultdict(lambda: None),
        _unacked_messages=set(),
        _waiting_for_ack=None,
        _n_acked=0,
        app=SimpleNamespace(topics=_Topics()),
    )
    for name in ("ack", "_add_gap", "_should_commit"):
        setattr(c, name, getattr(FaustConsumer, name).__get__(c))
    c._new_offset = new_offset.__get__(c)
    return c


def _commits_after_the_seek_race(new_offset: Any, commits: int = 6) -> list[int | None]:
    """The rebalance race as it happens in Faust's recovery: partitions resumed before the
    seek, 30 records delivered from the committed offset 142 and 20 of them acked; the seek
    rewinds the read offset to 142; the rest of the batch looks like a jump, so Faust adds
    a gap over offsets already acked; then records keep coming and commits run."""
    from faust.types import TP

    tp = TP("aggregates.contributions", 0)
    c = _bookkeeping(new_offset)
    committed = 142
    for offset in range(committed, committed + 20):
        c.ack(_Message(tp, offset))
    c._read_offset[tp] = c._committed_offset[tp] = committed  # perform_seek
    jump = committed + 30
    asyncio.run(c._add_gap(tp, committed + 1, jump))  # faust/transport/consumer.py drain
    next_offset = jump
    written: list[int | None] = []
    for _ in range(commits):
        for offset in range(next_offset, next_offset + 20):
            c.ack(_Message(tp, offset))
        next_offset += 20
        new = c._new_offset(tp)
        if new is not None and c._should_commit(tp, new):
            c._committed_offset[tp] = new
        written.append(c._committed_offset[tp])
    return written


def _faust_new_offset() -> Any:
    return getattr(FaustConsumer, "_ps_faust_new_offset", FaustConsumer._new_offset)


def test_faust_new_offset_still_crawls_after_the_seek_race() -> None:
    # Faust 0.15.3's own choice moves the commit on by one record per commit (the crawl).
    # When an upgrade fixes it, this fails: the patch can then go.
    assert _commits_after_the_seek_race(_faust_new_offset()) == [144, 145, 146, 147, 148, 149]


def test_one_ack_per_offset_commits_up_to_the_head_after_the_seek_race() -> None:
    patches.one_ack_per_offset()
    assert FaustConsumer._new_offset is not _faust_new_offset()
    written = _commits_after_the_seek_race(FaustConsumer._new_offset)
    # Every offset from 142 up to the last acked one was acked or read back: all commit.
    assert written == [192, 212, 232, 252, 272, 292]


def test_one_ack_per_offset_never_commits_past_an_offset_not_acked() -> None:
    from faust.types import TP

    patches.one_ack_per_offset()
    tp = TP("pos.receipts", 1)
    c = _bookkeeping(FaustConsumer._new_offset)
    c._committed_offset[tp] = 10
    for offset in (10, 11, 12, 14, 15):  # 13 not processed yet
        c.ack(_Message(tp, offset))
    assert c._new_offset(tp) == 13
    c._committed_offset[tp] = 13
    # A gap beyond the highest acked offset is not counted as done.
    asyncio.run(c._add_gap(tp, 16, 30))
    c.ack(_Message(tp, 13))
    assert c._new_offset(tp) == 16


def test_the_worker_applies_one_ack_per_offset() -> None:
    from stream.engine.app import patch_libraries

    patch_libraries()
    assert getattr(FaustConsumer, "_ps_one_ack_per_offset", False)
    assert _params(_faust_new_offset()) == ["self", "tp"]


# -- table_stores_without_wal -------------------------------------------------------------

# Runs in a child process that ends with os._exit(0): no garbage collection, no atexit, no
# RocksDB destructor -- what is not flushed explicitly is lost, as after kill -9. The child
# keeps its own reference to the partition database (as anything in the worker could), so
# Faust dropping it from Store._dbs does not close it either.
_CHILD = """
import asyncio, os, sys
import faust
from faust.types import TP
from stream.engine import store_patches

mode, datadir = sys.argv[1], sys.argv[2]
if mode != "unpatched":
    store_patches.table_stores_without_wal()
app = faust.App("nowal-test", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=datadir)
table = app.Table("t", partitions=4, key_type=bytes, value_type=bytes)
held = store_patches.partition_db(table, 2)
held.put(b"k", b"v")
if mode == "stop_hook":
    # What Output.settle does at a stop: the delivered changelog offset into the database.
    tp = TP(table.changelog_topic.get_topic_name(), 2)
    store_patches.BEFORE_STOP[:] = [lambda: table.data.set_persisted_offset(tp, 41)]
    asyncio.run(table.data.stop())
elif mode == "stop":
    asyncio.run(table.data.stop())
elif mode == "revoke":
    table.data.revoke_partitions(table, {TP(table.changelog_topic.get_topic_name(), 2)})
print(table.data.partition_path(2), store_patches.open_partition_dbs(table) == {}, flush=True)
os._exit(0)
"""


def _written_then_killed(tmp_path: Path, mode: str, key: bytes = b"k") -> bytes | None:
    """Write k=v to partition 2 in a child, do ``mode``, os._exit; what the database holds
    under ``key``."""
    import subprocess
    import sys

    from rocksdict import Options, Rdict

    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    path, dropped = out[0], out[1]
    if mode in ("stop", "revoke", "stop_hook"):
        assert dropped == "True"  # Faust let go of the database (without closing it)
    db = Rdict(path, options=Options(raw_mode=True))
    try:
        value: bytes | None = db.get(key)
        return value
    finally:
        db.close()


def test_faust_table_databases_keep_a_write_ahead_log_unpatched(tmp_path: Path) -> None:
    # What the patch changes: Faust's own databases survive os._exit through their WAL.
    assert _written_then_killed(tmp_path, "unpatched") == b"v"


def test_patched_table_databases_write_without_wal(tmp_path: Path) -> None:
    # Nothing flushed, no WAL: the write is gone (so the WAL is really off, and only the
    # flushes below keep state across a stop).
    assert _written_then_killed(tmp_path, "write") is None


def test_patched_store_flushes_every_database_when_it_stops(tmp_path: Path) -> None:
    # Fails if stop_flushed's flush is removed: the held database is neither closed nor
    # collected, and the process ends without a destructor.
    assert _written_then_killed(tmp_path, "stop") == b"v"


def test_a_stop_keeps_the_changelog_offsets_its_hook_writes_before_the_flush(
    tmp_path: Path,
) -> None:
    """Faust stops its tables before its last producer flush: Output.settle, run first by
    every Store.stop, writes the offsets delivered since the last commit, and the flush
    after it keeps them (a hook run after the flush would write into a database nothing
    flushes again)."""
    from stream.engine.restore import OFFSET_KEY

    assert _written_then_killed(tmp_path, "stop_hook", OFFSET_KEY) == b"41"


def test_patched_store_flushes_a_database_it_revokes(tmp_path: Path) -> None:
    assert _written_then_killed(tmp_path, "revoke") == b"v"


class _UnflushableDb:
    def flush(self) -> None:
        raise RuntimeError("disk full")


def _table_with_unflushable_db(tmp_path: Path, partition: int, on_revoke_failure: Any) -> Any:
    """A patched Faust table whose partition database fails every flush (no failures yet)."""
    store_patches.table_stores_without_wal(on_revoke_failure=on_revoke_failure)
    table = _app(tmp_path).Table("t", partitions=4, key_type=bytes, value_type=bytes)
    table.data._dbs[partition] = _UnflushableDb()
    store_patches.STATE_FLUSH_FAILURES.clear()
    return table


def test_a_failed_flush_is_recorded_so_the_stop_is_not_clean(tmp_path: Path) -> None:
    table = _table_with_unflushable_db(tmp_path, 1, None)
    try:
        asyncio.run(table.data.stop())
        assert [f"{table.name}[1]: disk full"] == store_patches.STATE_FLUSH_FAILURES
        assert table.data._dbs == {}
    finally:
        store_patches.STATE_FLUSH_FAILURES.clear()


def test_the_worker_applies_table_stores_without_wal() -> None:
    from faust.stores.rocksdb import RocksDBOptions, Store

    from stream.engine.app import patch_libraries

    patch_libraries()
    assert Store._ps_no_wal
    assert RocksDBOptions.open.__name__ == "open_no_wal"
    assert Store.stop.__name__ == "stop_flushed"
    assert Store.revoke_partitions.__name__ == "revoke_flushed"
    from stream.engine.agents import fatal_exit

    assert [fatal_exit] == store_patches._ON_REVOKE_FLUSH_FAILURE
    store_patches.table_stores_without_wal()  # no handler for the other tests


def test_faust_store_drops_databases_without_closing_them() -> None:
    # The reason for the explicit flushes: if Faust closes them again one day (rocksdict's
    # close() flushes), the patch is redundant and can go.
    import faust.stores.rocksdb as frocks

    stop = inspect.getsource(patches.ORIGINALS.get("Store.stop", frocks.Store.stop))
    revoke = inspect.getsource(
        patches.ORIGINALS.get("Store.revoke_partitions", frocks.Store.revoke_partitions)
    )

    def closes(src: str) -> bool:
        return any("close(" in line.split("#")[0] for line in src.splitlines())

    assert "self._dbs.clear()" in stop and not closes(stop)
    assert "self._dbs.pop(tp.partition, None)" in revoke and not closes(revoke)
    assert list(inspect.signature(frocks.RocksDBOptions.open).parameters) in (
        ["self", "path", "read_only"],
    )


def test_a_failed_flush_at_revocation_stops_the_worker(tmp_path: Path) -> None:
    # The partition may come back to this process; its database would then lack writes.
    from faust.types import TP

    stops: list[str] = []
    table = _table_with_unflushable_db(tmp_path, 3, stops.append)
    try:
        table.data.revoke_partitions(table, {TP(table.changelog_topic.get_topic_name(), 3)})
        assert stops == [f"table state of {table.name}[3] not flushed"]
        assert 3 not in table.data._dbs
    finally:
        store_patches.STATE_FLUSH_FAILURES.clear()
        store_patches.table_stores_without_wal()  # no handler for the other tests


# -- retry_failed_commits -------------------------------------------------------------------


def _committing(results: list[bool]) -> Any:
    """Faust's own _commit_offsets and bookkeeping on a bare object whose broker commit
    answers ``results`` in turn; returns the object and the offsets the broker accepted."""
    import logging
    from types import SimpleNamespace

    from faust.types import TP

    c = _bookkeeping(FaustConsumer._new_offset)
    accepted: list[dict[Any, int]] = []

    async def _commit(offsets: dict[Any, int]) -> bool:
        ok = results.pop(0)
        if ok:
            accepted.append(dict(offsets))
        return ok

    async def flush() -> None:
        return None

    c._commit = _commit
    c.in_transaction = False
    c.log = SimpleNamespace(
        dev=lambda *a, **k: None, info=lambda *a, **k: None, warning=lambda *a, **k: None
    )
    c.log.logger = logging.getLogger("test")
    c.assignment = lambda: {TP("pos.receipts", 1)}
    c.app.producer = SimpleNamespace(flush=flush)
    c.app.tables = SimpleNamespace(on_commit=lambda offsets: None)
    c.app.monitor = SimpleNamespace(on_tp_commit=lambda offsets: None)
    for name in ("_commit_offsets", "_filter_committable_offsets"):
        setattr(c, name, getattr(FaustConsumer, name).__get__(c))
    return c, accepted


def _commit_round(c: Any, tp: Any) -> None:
    offsets = c._filter_committable_offsets([tp])
    if offsets:
        asyncio.run(c._commit_offsets(offsets))


def test_faust_counts_a_failed_commit_as_committed() -> None:
    # What the patch changes: unpatched, the failed offset is recorded and never sent again.
    from faust.types import TP

    tp = TP("pos.receipts", 1)
    c, accepted = _committing([False, True])
    c._commit_offsets = patches.ORIGINALS.get(
        "Consumer._commit_offsets", FaustConsumer._commit_offsets
    ).__get__(c)
    c._committed_offset[tp] = 10
    for offset in range(10, 20):
        c.ack(_Message(tp, offset))
    _commit_round(c, tp)
    assert c._committed_offset[tp] == 20 and accepted == []  # believed, not committed
    _commit_round(c, tp)
    assert accepted == []  # nothing new acked: no commit is ever sent again


def test_a_failed_commit_is_sent_again_at_the_next_commit() -> None:
    from faust.types import TP

    patches.one_ack_per_offset()
    patches.retry_failed_commits()
    tp = TP("pos.receipts", 1)
    c, accepted = _committing([False, True, True])
    c._committed_offset[tp] = 10
    for offset in range(10, 20):
        c.ack(_Message(tp, offset))
    _commit_round(c, tp)  # the broker refuses it (a rebalance, a broker restart)
    assert c._committed_offset[tp] == 10 and accepted == []
    _commit_round(c, tp)  # no record since: the same offset again
    assert accepted == [{tp: 20}] and c._committed_offset[tp] == 20
    for offset in range(20, 25):
        c.ack(_Message(tp, offset))
    _commit_round(c, tp)
    assert accepted[-1] == {tp: 25}


def test_a_failed_commit_is_never_sent_backwards() -> None:
    from faust.types import TP

    patches.one_ack_per_offset()
    patches.retry_failed_commits()
    tp = TP("pos.receipts", 1)
    c, accepted = _committing([False])
    c._committed_offset[tp] = 10
    for offset in range(10, 20):
        c.ack(_Message(tp, offset))
    _commit_round(c, tp)
    c._committed_offset[tp] = 30  # an assignment read the group's offset, further on
    _commit_round(c, tp)
    assert accepted == []


def test_the_worker_applies_retry_failed_commits() -> None:
    from stream.engine.app import patch_libraries

    patch_libraries()
    assert getattr(FaustConsumer, "_ps_retry_failed_commits", False)
