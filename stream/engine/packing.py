"""Packs: what one batch sends to one partition of a packed internal topic, as one record.

Why: a record costs Faust's engine ~90 µs of CPU per hop whatever its size (BENCHMARKS.md),
and ``receipts.identified`` and ``aggregates.contributions`` each carried one record per
receipt. Packing per *key*
(store) was tried first and bought little: a worker batch of a few hundred receipts spreads
over hundreds of stores, so most packs held one receipt (BENCHMARKS.md, "Design changes").
Per *partition* a batch's contributions make as many records as the topic has partitions.
The worker's batch loop (stream/engine/agents.py) puts what a batch's receipt steps send to
one partition into one record, a JSON array of ``[key, value]`` elements
(``TopicSpec.packed``), and ``Runner.process`` on the other side runs each element as a step
of its own, with its own key. A pack's outputs to compacted topics are thinned to the last
per key (``runner.last_per_compacted_key``): the group-aggregate stage sends each store-day
once per pack.

What may go into a pack (``Stage.packs_from``), and why that keeps every guarantee: only an
output its input record regenerates whole. A receipt's identified record and contribution
are functions of the receipt and the card state it read, which only a later record of the
same partition changes (card_join keeps no dedupe state), so if the worker dies before the pack is
sent, the receipt's offset is not committed either (Faust commits a batch only after the
batch loop has handed every output to the producer, and the producer has delivered them) and
the receipt is processed again, with the same contribution. A card record that releases
parked receipts also deletes their parking entries, so it could not regenerate them: what a
card record sends goes at once, as before. Exactly once per receipt stays where it was: the
reading stages' dedupe marks, per element, written in the same order as before.

A pack never exceeds the topic's record limit (``Rules.record_limit``): an element that
would push its pack over the limit sends the pack first. ``replay`` packs per fed record
(packs of one, sent as plain records), so it runs this code too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from stream.engine.runner import PACKED_TOPICS, Outgoing, RawRecord
from topologies.pipeline import Stage

# The worker's batch (stream/engine/agents.py, take_events): up to this many events, or
# what arrived within this many seconds.
BATCH_MAX = 500
# 0.01 s, not 0.05: each hop waited up to the window for a batch to fill, two hops before
# receipts.totals; p50 at 200/s 130 -> 87 ms, throughput within noise
# (benchmarks/results/2026-12-07-diary.md, section 5).
BATCH_WITHIN_S = 0.01
# A record to send and its timestamp (epoch millis).
Send = tuple[Outgoing, int]
# (topic, key) -> the partition the producer's partitioner gives it.
PartitionOf = Callable[[str, bytes], int]
# Array brackets and a separator per element: what a pack adds to its elements' bytes.
_FRAME = 2


@dataclass(slots=True)
class _Pack:
    first: Outgoing  # its key routes the pack to the partition of every element
    elements: list[bytes] = field(default_factory=list)
    size: int = _FRAME
    timestamp_ms: int = 0


class Packer:
    """Collects the packable outputs of a batch per destination partition; ``drain`` sends
    them, one record per (topic, partition).

    A pack is a JSON array of ``[key, value]`` elements whose keys all go to one partition
    (``partition_of``, the producer's own partitioner); the record's key is its first
    element's, so the producer puts the pack on that partition too. It carries the latest
    timestamp of its elements: the processing clock of the stage that reads it (parking
    windows, dedupe expiry) only moves forward.
    """

    def __init__(
        self,
        limit_of: Callable[[str], int],
        partition_of: PartitionOf,
        topics: frozenset[str] = PACKED_TOPICS,
    ) -> None:
        """``topics``: the topics it packs; empty = none (settings ``pack_internal_topics``
        off: every output goes as it is made, the design before packing)."""
        self._limit_of = limit_of
        self._partition_of = partition_of
        self._topics = topics
        self._packs: dict[tuple[str, int], _Pack] = {}

    def __len__(self) -> int:
        return sum(len(p.elements) for p in self._packs.values())

    def add(self, out: Outgoing, timestamp_ms: int) -> list[Send]:
        """Put ``out`` in its partition's pack. Returns what must be sent now: a tombstone or
        a record without a key (never packed), or the partition's pack when ``out`` would take
        it over the record limit."""
        if out.value is None or out.key is None or out.topic not in self._topics:
            return [(out, timestamp_ms)]
        slot = (out.topic, self._partition_of(out.topic, out.key))
        element = b"[" + orjson.dumps(out.key.decode()) + b"," + out.value + b"]"
        ready: list[Send] = []
        pack = self._packs.get(slot)
        grown = len(element) + 1
        if pack is not None and (
            len(pack.first.key or b"") + pack.size + grown > self._limit_of(out.topic)
        ):
            ready.append(_record(self._packs.pop(slot)))
            pack = None
        if pack is None:
            pack = self._packs[slot] = _Pack(out)
        pack.elements.append(element)
        pack.size += grown
        pack.timestamp_ms = max(pack.timestamp_ms, timestamp_ms)
        return ready

    def drain(self) -> list[Send]:
        """Every pack held, as records to send (in the order their partitions first came)."""
        packs, self._packs = self._packs, {}
        return [_record(pack) for pack in packs.values()]


def _record(pack: _Pack) -> Send:
    # A pack of one is sent as the plain record: the bytes of before packing (within the
    # record limit, which the runner checked), and what replay's packs of one are.
    first = pack.first
    if len(pack.elements) == 1:
        return first, pack.timestamp_ms
    value = b"[" + b",".join(pack.elements) + b"]"
    return Outgoing(first.topic, first.key, value), pack.timestamp_ms


def sends(packer: Packer, stage: Stage, rec: RawRecord, outs: list[Outgoing]) -> list[Send]:
    """What to send now of ``stage``'s outputs for ``rec``; the rest waits in ``packer``.

    Outputs carry the input's broker timestamp, so downstream stages run on the same
    processing clock as in ``replay`` (parking windows, dedupe expiry, audit).
    """
    ts = rec.timestamp
    if rec.topic not in stage.packs_from:
        return [(out, ts) for out in outs]
    return [s for out in outs for s in packer.add(out, ts)]
