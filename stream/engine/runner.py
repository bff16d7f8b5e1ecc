"""Runs one raw record through a topology stage: decode, step, encode, dead letters.

This is the single code path shared by the Faust worker (``stream/engine/agents.py``) and the
in-process driver (``stream/tools/replay.py``): both hand it raw key/value bytes with topic,
partition, offset and broker timestamp, and send what it returns.

Errors are values: undecodable input and rule violations become records on ``deadletters``
(with the original bytes, topic, partition, offset and a reason code). An unexpected
exception in a step is a bug, but one bad record must not crash-loop the worker: it is
dead-lettered as ``processing_error`` and logged with its position, never with its content.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stream.engine.metric_labels import E2E_TOPICS
from stream.engine.metrics import Metrics
from stream.local.topics import TOPICS
from stream.serde.codec import Codec, DecodeError, EncodeError
from topologies.context import CatalogLookup, Context, no_catalog
from topologies.pipeline import Stage
from topologies.records import Reject, StepResult
from topologies.rules import Rules
from topologies.state import StagedState, State

log = logging.getLogger(__name__)

DLQ_TOPIC = "deadletters"
MAX_ERROR_CHARS = 500
# Inputs whose records carry a purchase time (their own or their receipt's).
RECEIPT_TOPICS = frozenset({"pos.receipts", "receipts.identified", "receipts.totals"})
PACKED_TOPICS = frozenset(name for name, spec in TOPICS.items() if spec.packed)
COMPACTED_TOPICS = frozenset(name for name, spec in TOPICS.items() if spec.compacted)


def purchase_time_ms(value: Mapping[str, Any] | None) -> int | None:
    """The purchase time a record carries (its own or its receipt's), epoch millis."""
    if not value:
        return None
    t = value.get("purchased_at")
    if t is None:
        receipt = value.get("receipt")
        if isinstance(receipt, dict):
            t = receipt.get("purchased_at")
    return t if isinstance(t, int) else None


def last_per_compacted_key(out: list[Outgoing]) -> list[Outgoing]:
    """``out`` with only the last record of each key of a compacted topic (in its place)."""
    last = {(o.topic, o.key): i for i, o in enumerate(out) if o.topic in COMPACTED_TOPICS}
    return [
        o
        for i, o in enumerate(out)
        if o.topic not in COMPACTED_TOPICS or last[(o.topic, o.key)] == i
    ]


class _Unsendable(Exception):
    """An output of a step cannot be sent: the input is dead-lettered with this reject."""

    def __init__(self, reject: Reject) -> None:
        super().__init__(reject.code)
        self.reject = reject


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int  # broker timestamp, epoch millis: the processing clock
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None


class Runner:
    def __init__(
        self,
        codec: Codec,
        rules: Rules,
        metrics: Metrics | None = None,
        catalog: CatalogLookup = no_catalog,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        self.codec = codec
        self.rules = rules
        self.metrics = metrics or Metrics()
        self.catalog = catalog
        # The worker passes time.time: end-to-end latency and event-time lag are wall-clock
        # figures, meaningless in a replay of old events (which leaves them out).
        self.wall_clock = wall_clock

    def process(self, stage: Stage, state: State, rec: RawRecord) -> list[Outgoing]:
        started = time.perf_counter()
        m = self.metrics
        m.inc(m.child(m.events_in, rec.topic))
        try:
            key = self.codec.decode_key(rec.key)
            if rec.topic in PACKED_TOPICS:
                elements = self.codec.decode_pack(rec.topic, rec.value, key)
            else:
                elements = [(key, self.codec.decode(rec.topic, rec.value))]
        except DecodeError as exc:
            dl = self.dead_letter(stage.name, rec, Reject(exc.code, str(exc)))
            # Counted like every other output (records_out once read 3 with 23 written).
            m.inc(m.child(m.records_out, DLQ_TOPIC))
            return [dl]
        if len(elements) == 1:
            out = self._step(stage, state, rec, *elements[0])
        else:
            # A pack (stream/engine/packing.py): each element is a step of its own, with its
            # own key and staged writes committed before the next one's, exactly as if the
            # records had come one by one; only the outputs of compacted topics are thinned to the
            # last per key, which is what compaction keeps (a crash before they are sent
            # re-runs the whole pack: each step's duplicate path re-sends its current value).
            out = []
            for element_key, value in elements:
                out.extend(self._step(stage, state, rec, element_key, value))
            out = last_per_compacted_key(out)
        for o in out:
            m.inc(m.child(m.records_out, o.topic))
        m.child(m.processing, stage.name).observe(time.perf_counter() - started)
        return out

    def _step(
        self,
        stage: Stage,
        state: State,
        rec: RawRecord,
        key: str | None,
        value: dict[str, Any] | None,
    ) -> list[Outgoing]:
        """One record through ``stage``'s step: staged writes, outputs, dead letters."""
        m = self.metrics
        in_purchased_at = purchase_time_ms(value) if rec.topic in RECEIPT_TOPICS else None
        if rec.topic == "pos.receipts" and in_purchased_at is not None:
            m.event_time_lag.observe(max(0.0, (rec.timestamp - in_purchased_at) / 1000))
            if self.wall_clock is not None:
                m.receipt_watermark(rec.partition, in_purchased_at)
        ctx = Context(
            now_ms=rec.timestamp,
            rules=self.rules,
            catalog=self.catalog,
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            raw_key=rec.key,
            raw_value=rec.value,
        )
        # The step writes to a staging layer: its writes reach the state (and the
        # changelog) only once every output is known to be sendable (topologies/state.py).
        staged = StagedState(state)
        try:
            result = stage.step(ctx, staged, rec.topic, key, value)
            out = self._outgoing(result)
        except _Unsendable as exc:
            staged.discard()
            log.error(
                "stage %s: an output of %s[%d]@%d cannot be sent (%s); input dead-lettered",
                stage.name,
                rec.topic,
                rec.partition,
                rec.offset,
                exc.reject.code,
            )
            result = StepResult(rejects=[exc.reject])
            out = []
        except Exception as exc:  # noqa: BLE001 - one bad record must not crash-loop the worker
            staged.discard()
            log.error(
                "stage %s failed on %s[%d]@%d: %s (record dead-lettered)",
                stage.name,
                rec.topic,
                rec.partition,
                rec.offset,
                type(exc).__name__,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            m.inc(m.child(m.processing_errors, stage.name))
            result = StepResult(rejects=[Reject("processing_error", type(exc).__name__)])
            out = []
        staged.commit()
        for reject in result.rejects:
            out.append(self.dead_letter(stage.name, rec, reject))
        m.observe(stage.name, result)
        if self.wall_clock is not None:
            now_s = self.wall_clock()
            for e in result.emits:
                if e.value is not None and e.topic in E2E_TOPICS:
                    # The output's own purchase time (a released parked receipt is older
                    # than the card record that released it), else the input's (a tally).
                    t = purchase_time_ms(e.value) or in_purchased_at
                    if t is not None:
                        m.end_to_end_latency(e.topic, t, now_s)
        gauge = stage.gauge
        if gauge is not None and any(result.events.get(e) for e in gauge.changed_by):
            m.child(m.state_gauges[gauge.metric], str(rec.partition)).set(gauge.read(state))
        return out

    def tick(self, stage: Stage, state: State, now_ms: int, partition: int = -1) -> list[Outgoing]:
        """Run a stage's time-driven work (``Stage.tick``) on one state partition."""
        if stage.tick is None:
            return []
        ctx = Context(now_ms=now_ms, rules=self.rules, catalog=self.catalog, partition=partition)
        result = stage.tick(ctx, state)
        out = self._outgoing(result)
        rec = RawRecord("", partition, -1, now_ms, None, None)
        out.extend(self.dead_letter(stage.name, rec, r) for r in result.rejects)
        self.metrics.observe(stage.name, result)
        for o in out:
            self.metrics.inc(self.metrics.child(self.metrics.records_out, o.topic))
        return out

    def _outgoing(self, result: StepResult) -> list[Outgoing]:
        """The step's emits as records, each checked against the record size limit."""
        out = []
        limit_of = self.rules.record_limit
        for e in result.emits:
            try:
                o = Outgoing(
                    e.topic, self.codec.encode_key(e.key), self.codec.encode(e.topic, e.value)
                )
            except (EncodeError, UnicodeEncodeError) as exc:
                raise _Unsendable(Reject("output_invalid", f"{e.topic}: {exc}"[:500])) from exc
            size = len(o.key or b"") + len(o.value or b"")
            limit = limit_of(e.topic)
            if size > limit:
                raise _Unsendable(
                    Reject("output_too_large", f"{e.topic}: {size} bytes > limit {limit}")
                )
            out.append(o)
        return out

    def dead_letter(self, stage: str, rec: RawRecord, reject: Reject) -> Outgoing:
        """The dead-letter record for ``rec`` (or for ``reject.origin``), counted."""
        self.metrics.inc(self.metrics.child(self.metrics.dead_letters, stage, reject.code))
        o = reject.origin
        record: dict[str, Any] = {
            "stage": stage,
            "topic": o.topic if o else rec.topic,
            "partition": o.partition if o else rec.partition,
            "offset": o.offset if o else rec.offset,
            "reason": reject.code,
            # Bounded: a detail may quote the input (a 400 KB product code), and the dead
            # letter must keep room for the input's own bytes.
            "error": reject.detail[:MAX_ERROR_CHARS],
            "key": o.raw_key if o else rec.key,
            "value": o.raw_value if o else rec.value,
            "failed_at": rec.timestamp,
        }
        key = record["key"]
        value = self.codec.encode(DLQ_TOPIC, record)
        size = len(key or b"") + len(value or b"")
        if size > self.rules.record_limit(DLQ_TOPIC):
            # The input itself was near the limit: keep where it is (topic, partition,
            # offset) and why, without its bytes, rather than lose the dead letter.
            original = len(record["value"] or b"") + len(record["key"] or b"")
            record["key"] = record["value"] = None
            record["error"] = f"{record['error']} [original {original} bytes not copied]"[:2000]
            key = None
            value = self.codec.encode(DLQ_TOPIC, record)
        return Outgoing(DLQ_TOPIC, key, value)
