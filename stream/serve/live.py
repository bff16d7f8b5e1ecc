"""Live updates for the API's server-sent events: counter and Bonus changes, per caller.

Counters are keyed by customer and the Bonus ledger by household, so the worker that holds
a caller's SSE connection is usually *not* the one that computes their updates. Each worker
therefore reads the two output topics itself, from their end, with a plain confluent-kafka
consumer outside the consumer group (``assign``, no commits) in a background thread, and
hands every record to the connections subscribed to its key. Nothing is stored; a record
whose key no connection wants is dropped at once.

While no connection is open the thread reads nothing (the consumer is unassigned): a worker
with no live clients does not fetch every counter and Bonus change of the country. The first
subscription positions it at the topics' end again (a few milliseconds of changes made while
it does are not sent, like those between the page loading its figures and subscribing), and
:meth:`LiveFeed.subscribe` returns only once the thread is positioned: every change made
after it returns reaches the connection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from confluent_kafka import OFFSET_END, KafkaException

from stream.local.clients import RestingReader, assigned_consumer
from stream.serde.codec import Codec, DecodeError
from topologies.access import Viewer

log = logging.getLogger(__name__)

COUNTERS_TOPIC = "smobiili.counters"
BONUS_TOPIC = "household.bonus"
QUEUE_MAX = 256
IDLE_CHECK_S = 1.0  # how often an idle feed re-checks for subscribers without being woken
POSITION_TIMEOUT_S = 10.0  # how long subscribe() waits for the feed to be reading
RETRY_S = 1.0  # after a broker error while positioning or reading


class LiveFeed:
    def __init__(self, bootstrap: str, codec: Codec, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.codec = codec
        self.partitions = partitions
        self._subs: dict[str, set[asyncio.Queue[tuple[str, dict[str, Any]]]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._wanted = threading.Event()  # set by subscribe(): wake the idle thread
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.reading = False  # the consumer is positioned (some connection is subscribed)
        self._consumer: Any = None
        # Futures of subscribe() calls waiting for the thread to be reading (loop's thread
        # appends, feed thread takes; guarded by the lock).
        self._waiters: list[asyncio.Future[None]] = []
        self._lock = threading.Lock()

    # --- subscriptions (event loop thread) --------------------------------------------

    @staticmethod
    def _channels(viewer: Viewer) -> tuple[str, ...]:
        chans = [f"c:{viewer.subject}"]
        if viewer.household_id:
            chans.append(f"h:{viewer.household_id}")
        return tuple(chans)

    async def subscribe(self, viewer: Viewer) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        """The connection's queue, once the feed reads every change made from then on."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_MAX)
        for chan in self._channels(viewer):
            self._subs.setdefault(chan, set()).add(queue)
        if self._thread is None or not self._thread.is_alive():
            return queue  # not started (or stopped): nothing will come, as before
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters.append(waiter)
        self._wanted.set()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), POSITION_TIMEOUT_S)
        except asyncio.CancelledError:
            self.unsubscribe(viewer, queue)  # the connection went away meanwhile
            raise
        except TimeoutError:
            log.warning(
                "live feed not reading after %.0fs; the connection may miss changes",
                POSITION_TIMEOUT_S,
            )
        return queue

    def unsubscribe(self, viewer: Viewer, queue: asyncio.Queue[Any]) -> None:
        for chan in self._channels(viewer):
            subs = self._subs.get(chan)
            if subs is not None:
                subs.discard(queue)
                if not subs:
                    del self._subs[chan]

    def subscribers(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def assigned_partitions(self) -> int:
        """Partitions the feed's consumer is assigned right now (0 while idle)."""
        consumer = self._consumer
        return 0 if consumer is None else len(consumer.assignment())

    def _publish(self, chan: str, kind: str, payload: dict[str, Any]) -> None:
        for queue in list(self._subs.get(chan, ())):
            if queue.full():
                queue.get_nowait()  # a slow client loses the oldest update, not the newest
            queue.put_nowait((kind, payload))

    # --- the consumer thread ----------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="live-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        topics = (COUNTERS_TOPIC, BONUS_TOPIC)
        consumer = assigned_consumer(
            self.bootstrap, "live", topics, self.partitions, OFFSET_END, 50
        )
        try:
            consumer.unassign()  # nothing is read until somebody subscribes
            self._consumer = consumer
            reader: RestingReader | None = None
            self.ready.set()
            while not self._stop.is_set():
                if not self._subs:
                    if reader is not None:
                        consumer.unassign()
                        reader = None
                        self.reading = False
                    self._wanted.wait(IDLE_CHECK_S)
                    self._wanted.clear()  # subscribe() after this is seen by the check above
                    continue
                try:
                    if reader is None:
                        # From the end as it is now: changes from this subscription on.
                        reader = RestingReader.at(consumer, topics, self.partitions, end=True)
                        self.reading = True
                    # Positioned at or before the end as it was when these subscribed.
                    self._release_waiters()
                    msgs = reader.poll(self._stop)
                except KafkaException as exc:
                    log.warning("live feed: broker error (%s); retrying in %.0fs", exc, RETRY_S)
                    consumer.unassign()
                    reader = None
                    self.reading = False
                    self._stop.wait(RETRY_S)
                    continue
                for msg in msgs:
                    if msg.error() is None:
                        self._dispatch(msg.topic() or "", msg.key(), msg.value())
        except Exception:  # noqa: BLE001 - the feed is best effort; the API still answers
            log.exception("live feed stopped")
        finally:
            self.reading = False
            self._consumer = None
            self._release_waiters()  # nobody waits for a feed that has stopped
            consumer.close()

    def _release_waiters(self) -> None:
        if not self._waiters:  # every poll; a waiter added just after is released next poll
            return
        with self._lock:
            waiters, self._waiters = self._waiters, []
        if waiters and self._loop is not None:
            self._loop.call_soon_threadsafe(_resolve_all, waiters)

    def _dispatch(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None or self._loop is None or not self._subs:
            return
        if topic == COUNTERS_TOPIC:
            chan, kind = f"c:{key.decode('utf-8', 'replace')}", "counters"
        else:
            chan, kind = f"h:{key.decode('utf-8', 'replace').split('|', 1)[0]}", "bonus"
        if chan not in self._subs:
            return
        try:
            payload = self.codec.decode(topic, value)
        except DecodeError:
            return
        if payload is not None:
            self._loop.call_soon_threadsafe(self._publish, chan, kind, payload)


def _resolve_all(waiters: list[asyncio.Future[None]]) -> None:
    for w in waiters:
        if not w.done():
            w.set_result(None)
