"""Live updates for the API's server-sent events: counter and Bonus changes, per caller.

Counters are keyed by customer and the Bonus ledger by household, so the worker that holds
a caller's SSE connection is usually *not* the one that computes their updates. Each worker
therefore reads the two output topics itself, from their end, with a plain confluent-kafka
consumer outside the consumer group (``assign``, no commits) in a background thread, and
hands every record to the connections subscribed to its key. Nothing is stored; a record
whose key no connection wants is dropped at once.

While no connection is open the thread reads nothing (the consumer is unassigned): a worker
with no live clients does not fetch every counter and Bonus change of the country. The first
subscription positions it at the topics' end again; it reports only changes from then on,
like a worker that was reading all along (the page loads the current figures first).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from confluent_kafka import OFFSET_END

from stream.admin import RestingReader, assigned_consumer
from stream.codec import Codec, DecodeError
from topologies.access import Viewer

log = logging.getLogger(__name__)

COUNTERS_TOPIC = "smobiili.counters"
BONUS_TOPIC = "household.bonus"
QUEUE_MAX = 256
IDLE_CHECK_S = 1.0  # how often an idle feed re-checks for subscribers without being woken


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
        self.reading = False  # the consumer is assigned (some connection is subscribed)

    # --- subscriptions (event loop thread) --------------------------------------------

    @staticmethod
    def _channels(viewer: Viewer) -> tuple[str, ...]:
        chans = [f"c:{viewer.subject}"]
        if viewer.household_id:
            chans.append(f"h:{viewer.household_id}")
        return tuple(chans)

    def subscribe(self, viewer: Viewer) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_MAX)
        for chan in self._channels(viewer):
            self._subs.setdefault(chan, set()).add(queue)
        self._wanted.set()
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
                if reader is None:
                    # From the end as it is now: changes from this subscription on.
                    reader = RestingReader.at(consumer, topics, self.partitions, end=True)
                    self.reading = True
                for msg in reader.poll(self._stop):
                    if msg.error() is None:
                        self._dispatch(msg.topic() or "", msg.key(), msg.value())
        except Exception:  # noqa: BLE001 - the feed is best effort; the API still answers
            log.exception("live feed stopped")
        finally:
            self.reading = False
            consumer.close()

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
