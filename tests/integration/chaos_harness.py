"""The chaos harness: two real workers on the embedded broker, live POS traffic, a schedule of
faults, and a comparison of every output with ``replay`` of what the input topics hold.

Used by ``tests/integration/test_chaos.py`` (short under ``make test``, full under
``make chaos``) and runnable on its own for the figures in docs/reliability.md::

    PYTHONPATH=. .venv/bin/python -m tests.integration.chaos_harness [--full] [--json FILE]

The method, in order (docs/reliability.md explains each choice):

1. An embedded broker on a fixed port (so a restart keeps the address) and the schema
   registry; two workers in one group, started before anything is written and waited for
   until they share the partitions; then the card register, consents and catalogue.
2. A sender thread plays the simulator's stream in real time at a steady rate, with its
   re-deliveries and late receipts. Two kinds of record are adjusted so that the outcome does
   not depend on how Kafka interleaves two topics (it orders records within a partition only):
   an opt-in takes effect ``OPT_IN_GRACE_MS`` after it is sent, and a change to a card already
   registered (a move, a closure, an erasure) is sent at a barrier: once everything before it
   is processed, and the traffic waits until it is processed too.
3. Faults, one after another: ``kill -9`` of a random worker (restarted at once, as a
   supervisor would), SIGTERM and restart, a clean broker restart, poison records
   (undecodable bytes on each input topic), a valid receipt with 10,000 line items, and a
   restart on an empty state directory. A worker that exits by itself is restarted too.
   After each fault, the time until the group has committed everything written up to a
   second after the fault was done is its recovery time.
4. Drain (group lag 0), dump every input topic (``stream/tools/replay_io.py``), ``replay`` the dump,
   and compare every output topic; independently, check every stored line item against its
   owner's consent as the input topics state it, and every input record the broker
   acknowledged against the dump (the broker may lose records, which replay cannot see).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from stream.engine.patches import FATAL
from stream.engine.runner import Outgoing
from stream.local.broker import EmbeddedBroker
from stream.local.offsets import read_all
from stream.local.reachability import free_port
from stream.local.registry_server import EmbeddedRegistryServer
from stream.local.topic_admin import create_topics
from stream.local.topics import TOPICS
from stream.serde.codec import Codec, DecodeError
from stream.serde.registry_client import ConfluentRegistryClient
from stream.serde.registry_store import InMemoryRegistry
from stream.settings import load_rules
from stream.simulator.config import SimConfig
from stream.simulator.generator import generate
from stream.tools.replay import Driver, decoded_output, encode_event, replay_events
from stream.tools.replay_io import dump
from tests.integration.state_check import stale_partitions
from tests.integration.worker_harness import WorkerProcess, wait_group_stable
from topologies.consent import E_RECEIPTS, MARKETING_TARGETING, PRODUCT_LEVEL_SERVICES
from topologies.consent import GATED_FLAGS as CONSENT_FLAGS
from topologies.pipeline import GROUP_INPUTS

PARTITIONS = 4
INPUTS = ("product.catalog", "customer.cards", "customer.consents", "pos.receipts")
OUTPUTS = tuple(n for n, s in TOPICS.items() if not s.internal and n not in INPUTS)
GATED_FLAGS = {
    "personal.line_items": PRODUCT_LEVEL_SERVICES,
    "smobiili.counters": PRODUCT_LEVEL_SERVICES,
    "marketing.signals": MARKETING_TARGETING,
    "ereceipts.archive": E_RECEIPTS,
}
# Longer than any recovery the suite accepts (60 s) with a wide margin: an opt-in sent at t
# covers purchases from t + grace, so no receipt it covers can reach the consent stage before
# it unless the pipeline stalled for longer than that.
OPT_IN_GRACE_MS = 180_000
RECOVERY_LIMIT_S = 60.0
OVERSIZED_LINES = 10_000
_FATAL = FATAL


@dataclass(frozen=True)
class Scale:
    name: str
    rate: float  # receipts per second offered
    households: int
    faults: tuple[str, ...]
    gap_s: float  # quiet time between a recovery and the next fault
    recovery_cap_s: float  # give up waiting for a recovery after this long


SHORT = Scale(
    "short",
    rate=20.0,
    households=300,
    faults=("kill9", "poison", "sigterm", "oversized", "kill9", "broker_restart", "empty_state"),
    gap_s=3.0,
    recovery_cap_s=90.0,
)
FULL = Scale(
    "full",
    rate=25.0,
    households=1500,
    faults=(
        "kill9",
        "poison",
        "kill9",
        "oversized",
        "sigterm",
        "kill9",
        "broker_restart",
        "kill9",
        "empty_state",
        "kill9",
        "sigterm",
        "kill9",
        "broker_restart",
        "empty_state",
        "kill9",
    ),
    gap_s=8.0,
    recovery_cap_s=150.0,
)


@dataclass
class FaultResult:
    kind: str
    target: str
    started_s: float  # since the traffic began
    recovered_s: float | None  # seconds from the fault to the group catching up; None = never
    backlog: int  # group inputs not yet committed when the fault began
    # The partition that caught up last (or those that never did), with the seconds it took:
    # where to look when a recovery is slow.
    last: str = ""

    @property
    def ok(self) -> bool:
        return self.recovered_s is not None and self.recovered_s <= RECOVERY_LIMIT_S


@dataclass
class TopicComparison:
    topic: str
    compared: int  # keys or distinct records compared
    lost: list[str] = field(default_factory=list)
    double: list[str] = field(default_factory=list)
    differ: list[str] = field(default_factory=list)


@dataclass
class ChaosReport:
    scale: str
    seed: int
    faults: list[FaultResult]
    topics: list[TopicComparison]
    beyond_consent: list[str]
    receipts_sent: int
    events_sent: int
    barriers: int
    opt_ins_deferred: int
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)
    traffic_errors: list[str] = field(default_factory=list)
    # Input records the broker acknowledged and no longer holds: invisible to the comparison
    # with replay (which reads the same topics), so checked against the sender's receipts.
    inputs_lost_by_broker: list[str] = field(default_factory=list)
    # Table partitions whose local database lacks changelog records below the offset it
    # claims (tests/integration/state_check.py): the next owner computes from stale state.
    stale_state: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return sum(len(t.lost) for t in self.topics)

    @property
    def double(self) -> int:
        return sum(len(t.double) for t in self.topics)

    @property
    def differ(self) -> int:
        return sum(len(t.differ) for t in self.topics)

    def table(self) -> str:
        rows = [
            f"chaos ({self.scale}, seed {self.seed}): {self.receipts_sent} receipts, "
            f"{self.events_sent} input records, {len(self.faults)} faults, "
            f"{self.barriers} register barriers, {self.opt_ins_deferred} opt-ins deferred",
            "",
            f"{'#':>2}  {'fault':<15} {'target':<10} {'at s':>6} {'backlog':>8} "
            f"{'recovered s':>12}  last partition to catch up",
        ]
        for i, f in enumerate(self.faults, 1):
            rec = "never" if f.recovered_s is None else f"{f.recovered_s:.1f}"
            flag = "" if f.ok else "  <-- over 60 s"
            rows.append(
                f"{i:>2}  {f.kind:<15} {f.target:<10} {f.started_s:>6.0f} {f.backlog:>8} "
                f"{rec:>12}  {f.last}{flag}"
            )
        rows += [
            "",
            f"{'output topic':<22} {'compared':>9} {'lost':>6} {'double':>7} {'differ':>7}",
        ]
        for t in self.topics:
            rows.append(
                f"{t.topic:<22} {t.compared:>9} {len(t.lost):>6} {len(t.double):>7} "
                f"{len(t.differ):>7}"
            )
        rows += [
            f"{'total':<22} {'':>9} {self.lost:>6} {self.double:>7} {self.differ:>7}",
            f"line items beyond consent: {len(self.beyond_consent)}",
            f"input records acknowledged by the broker, then missing: "
            f"{len(self.inputs_lost_by_broker)}",
            f"table partitions whose local state disagrees with its changelog: "
            f"{len(self.stale_state)}",
            "phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in self.seconds.items()),
        ]
        for t in self.topics:
            for what, keys in (("lost", t.lost), ("double", t.double), ("differ", t.differ)):
                if keys:
                    rows.append(f"  {t.topic} {what}: {len(keys)}, e.g. {keys[:3]}")
        if self.beyond_consent:
            rows.append(f"  beyond consent, e.g. {self.beyond_consent[:3]}")
        rows += [f"  stale state: {s}" for s in self.stale_state]
        rows += [f"note: {n}" for n in self.notes]
        return "\n".join(rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "seed": self.seed,
            "faults": [{**asdict(f), "ok": f.ok} for f in self.faults],
            "topics": [
                {
                    "topic": t.topic,
                    "compared": t.compared,
                    "lost": len(t.lost),
                    "double": len(t.double),
                    "differ": len(t.differ),
                }
                for t in self.topics
            ],
            "lost": self.lost,
            "double": self.double,
            "differ": self.differ,
            "beyond_consent": len(self.beyond_consent),
            "inputs_lost_by_broker": len(self.inputs_lost_by_broker),
            "stale_state": self.stale_state,
            "receipts_sent": self.receipts_sent,
            "events_sent": self.events_sent,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "notes": self.notes,
        }


def log(msg: str) -> None:
    """Progress on stderr (pytest -s shows it; the harness run on its own always does)."""
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the group's progress, read without joining it ---------------------------------------------


class GroupProbe:
    """Committed offsets and high watermarks of the workers' group on its inputs.

    One long-lived consumer that never subscribes (so it never joins the group) answers both;
    it is rebuilt after an error, e.g. while the broker restarts.
    """

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.tps = [TopicPartition(t, p) for t in GROUP_INPUTS for p in range(PARTITIONS)]
        self._consumer: Consumer | None = None

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": self.group,
                    "enable.auto.commit": False,
                    "log.connection.close": False,
                    "logger": _QUIET,
                }
            )
        return self._consumer

    def _reset(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                self._consumer.close()
        self._consumer = None

    def high(self) -> dict[tuple[str, int], int] | None:
        try:
            c = self._client()
            return {
                (tp.topic, tp.partition): c.get_watermark_offsets(tp, timeout=5, cached=False)[1]
                for tp in self.tps
            }
        except KafkaException:
            self._reset()
            return None

    def committed(self) -> dict[tuple[str, int], int] | None:
        try:
            got = self._client().committed(self.tps, timeout=5)
        except KafkaException:
            self._reset()
            return None
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in got}

    def lag(self) -> int | None:
        high, done = self.high(), self.committed()
        if high is None or done is None:
            return None
        return sum(max(h - done[k], 0) for k, h in high.items())

    def behind(self, target: dict[tuple[str, int], int]) -> dict[str, int] | None:
        """``{"topic[p]": records}`` still to commit to reach ``target``; None if unknown."""
        done = self.committed()
        if done is None:
            return None
        return {f"{t}[{p}]": v - done[(t, p)] for (t, p), v in target.items() if done[(t, p)] < v}

    def close(self) -> None:
        self._reset()


class _Quiet:
    """librdkafka's log lines while the broker restarts are expected; keep them off stderr."""

    def log(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def __getattr__(self, _name: str) -> Callable[..., None]:
        return self.log


_QUIET: Any = _Quiet()


# -- the traffic -----------------------------------------------------------------------------


def _is_barrier(event: dict[str, Any], known_cards: set[str]) -> bool:
    """A change to a card already registered, or an erasure: sent when nothing races it."""
    if event["topic"] == "customer.consents":
        return event["value"] is None
    if event["topic"] != "customer.cards":
        return False
    return event["key"] in known_cards


def prepare_traffic(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The stream after the register, with each opt-in deferred by ``OPT_IN_GRACE_MS``.

    An opt-in (a gated flag turning on, or a first consent record) takes effect at
    ``max(effective_at, timestamp + grace)``; later versions of that customer keep
    ``effective_at`` increasing, and a re-sent old version is re-sent as adjusted.
    Returns the adjusted events and how many opt-ins were deferred.
    """
    held: dict[str, dict[str, Any]] = {}
    adjusted: dict[tuple[str, int], dict[str, Any]] = {}
    deferred = 0
    out = []
    started = False
    for e in events:
        if e["topic"] == "pos.receipts":
            started = True
        if e["topic"] != "customer.consents" or e["value"] is None:
            out.append(e)
            continue
        value = e["value"]
        cid, version = value["customer_id"], value["version"]
        if (cid, version) in adjusted:  # a stale re-send: the same record as first sent
            out.append({**e, "value": dict(adjusted[(cid, version)])})
            continue
        prev = held.get(cid)
        if prev is not None and version <= prev["version"]:
            out.append(e)
            continue
        value = dict(value)
        opens = any(value[f] and (prev is None or not prev[f]) for f in CONSENT_FLAGS)
        if started and opens:
            value["effective_at"] = max(value["effective_at"], e["timestamp"] + OPT_IN_GRACE_MS)
            deferred += 1
        if prev is not None:
            value["effective_at"] = max(value["effective_at"], prev["effective_at"] + 1)
        held[cid] = adjusted[(cid, version)] = value
        out.append({**e, "value": dict(value)})
    return out, deferred


def oversized_receipt(events: list[dict[str, Any]], ts: int) -> dict[str, Any]:
    """A valid receipt with 10,000 line items for a known card whose owner allows product-level
    data, at a product-level chain: every gated store would receive its lines."""
    allowed = {
        e["key"]
        for e in events
        if e["topic"] == "customer.consents"
        and e["value"] is not None
        and e["value"]["product_level_services"]
        and e["value"]["e_receipts"]
    }
    changed = {e["key"] for e in events if e["topic"] == "customer.cards" and e["value"] is None}
    card = next(
        e["value"]["card_number"]
        for e in events
        if e["topic"] == "customer.cards"
        and e["value"] is not None
        and e["value"]["customer_id"] in allowed
        and e["key"] not in changed
    )
    template = next(
        e["value"]
        for e in events
        if e["topic"] == "pos.receipts"
        and e["value"]["chain"] == "S_MARKET"
        and e["value"]["lines"]
    )
    line = template["lines"][0]
    lines = [
        {**line, "line_no": i, "unit": "PCS", "quantity_milli": 1000, "amount_cents": 100}
        for i in range(1, OVERSIZED_LINES + 1)
    ]
    eligible = 100 * OVERSIZED_LINES if line["bonus_eligible"] else 0
    value = {
        **template,
        "receipt_id": "CHAOS-OVERSIZED-1",
        "card_number": card,
        "purchased_at": ts,
        "total_cents": 100 * OVERSIZED_LINES,
        "bonus_eligible_cents": eligible,
        "original_receipt_id": None,
        "lines": lines,
    }
    return {"topic": "pos.receipts", "key": card, "value": value, "timestamp": ts}


def poison_events(ts: int) -> list[dict[str, Any]]:
    """Undecodable bytes on every input topic, with keys no real record uses."""
    raw = base64.b64encode(b"\xde\xad\xbe\xef chaos poison \xff\xfe").decode()
    keys = {
        "product.catalog": "0000000000017",
        "customer.cards": "CHAOS-POISON-CARD",
        "customer.consents": "CHAOS-POISON-CUSTOMER",
        "pos.receipts": "CHAOS-POISON-RECEIPT",
    }
    return [{"topic": t, "key": k, "value_b64": raw, "timestamp": ts} for t, k in keys.items()]


class Sender(threading.Thread):
    """Plays the traffic at its own pace (its timestamps' spacing), with barriers; a pause
    (barrier, broker down) shifts the rest of the schedule instead of bursting."""

    def __init__(
        self,
        bootstrap: str,
        codec: Codec,
        traffic: list[dict[str, Any]],
        known_cards: set[str],
        probe_factory: Callable[[], GroupProbe],
    ) -> None:
        super().__init__(name="chaos-sender", daemon=True)
        self.bootstrap = bootstrap
        self.codec = codec
        self.traffic = traffic
        self.known_cards = set(known_cards)
        self.probe = probe_factory()
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()  # inject() and the loop share the producer
        self.fatal = False
        self.failed: list[tuple[str, Any, Any, int]] = []
        self.renewals = 0  # producers replaced after a fatal error
        self.resent = 0
        self.producer = _producer(bootstrap, self._on_error)
        self.errors: list[str] = []  # the traffic did not go out as planned: fails the run
        # (topic, key, timestamp) of every record the broker acknowledged: each must be in
        # the dump, or the broker lost it (the comparison with replay cannot see that).
        self.acked: set[tuple[str, bytes | None, int]] = set()
        self.warnings: list[str] = []
        self.sent = 0
        self.receipts = 0
        self.barriers = 0
        self.last_ts = 0
        self.extra: list[dict[str, Any]] = []  # injected records, for the report

    # The embedded broker does not keep an idempotent producer's sequence numbers across a
    # restart: the first produce after it fails fatally (OUT_OF_ORDER_SEQUENCE_NUMBER), as
    # it does for the workers' own producers (they exit 70 and are restarted). A gateway
    # must then start a new producer and send again what was not acknowledged; a record
    # the broker did keep is then in the topic twice, which every stage takes as a
    # redelivery.
    # librdkafka calls these from inside produce/poll/flush: they must never raise.
    def _on_error(self, err: Any) -> None:
        with contextlib.suppress(Exception):
            if err.fatal() or err.code() == _FATAL:
                self.fatal = True

    def _delivered(self, record: tuple[str, Any, Any, int], err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed.append(record)
        else:
            self.acked.add((record[0], record[1], record[3]))

    def _produce(self, record: tuple[str, Any, Any, int]) -> None:
        topic, key, value, ts = record
        while True:
            if self.fatal:
                self._renew()
            try:
                self.producer.produce(
                    topic,
                    key=key,
                    value=value,
                    timestamp=ts,
                    on_delivery=functools.partial(self._delivered, record),
                )
                self.producer.poll(0)
                return
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not (isinstance(err, KafkaError) and (err.fatal() or err.code() == _FATAL)):
                    raise
                self.fatal = True

    def _renew(self) -> None:
        """A new producer in place of a fatally failed one; what failed is sent again."""
        try:
            self.producer.flush(10)  # collects the failed deliveries (purged after the error)
        except (KafkaException, SystemError) as exc:
            # Seen once after a fatal error: a callback reported with an exception pending
            # inside the client. The records whose reports were lost are not sent again;
            # the comparison reads what the topics hold, so it stays exact.
            self.warnings.append(f"flush after a fatal error: {exc!r}")
        self.producer = _producer(self.bootstrap, self._on_error)
        self.fatal = False
        self.renewals += 1
        again, self.failed = self.failed, []
        self.resent += len(again)
        for record in again:
            self._produce(record)

    def send(self, event: dict[str, Any]) -> None:
        record = encode_event(self.codec, event)
        with self.lock:
            self._produce(record)
        self.sent += 1
        self.last_ts = max(self.last_ts, record[3])

    def inject(self, events: Iterable[dict[str, Any]]) -> None:
        for e in events:
            self.send(e)
            self.extra.append(e)
        self.flush()

    def flush(self) -> None:
        """Until every record sent so far is acknowledged (renewing after a fatal error)."""
        with self.lock:
            for _ in range(20):
                left = self.producer.flush(120)
                if not self.fatal and not self.failed and left == 0:
                    return
                if self.failed and not self.fatal:
                    # A plain delivery failure (e.g. timed out while the broker was down).
                    again, self.failed = self.failed, []
                    self.resent += len(again)
                    for record in again:
                        self._produce(record)
                else:
                    self._renew()
        self.errors.append("records still not acknowledged after 20 attempts")

    def _wait_drained(self) -> None:
        while not self.stop_flag.is_set():
            if self.probe.lag() == 0:
                return
            time.sleep(0.5)

    def run(self) -> None:
        try:
            self._play()
        except Exception as exc:  # noqa: BLE001 - reported, and the run fails on it
            self.errors.append(f"the sender stopped: {exc!r}")
            log(f"the sender stopped: {exc!r}")

    def _play(self) -> None:
        if not self.traffic:
            return
        t0_sim = self.traffic[0]["timestamp"]
        t0 = time.monotonic()
        for e in self.traffic:
            if self.stop_flag.is_set():
                break
            due = t0 + (e["timestamp"] - t0_sim) / 1000.0
            while (left := due - time.monotonic()) > 0 and not self.stop_flag.is_set():
                time.sleep(min(left, 0.2))
            if self.stop_flag.is_set():
                break
            if _is_barrier(e, self.known_cards):
                paused = time.monotonic()
                self.flush()
                self._wait_drained()
                if self.stop_flag.is_set():
                    break
                self.send(e)
                self.flush()
                self._wait_drained()
                self.barriers += 1
                t0 += time.monotonic() - paused
            else:
                self.send(e)
            if e["topic"] == "customer.cards" and e["value"] is not None:
                self.known_cards.add(e["key"])
            if e["topic"] == "pos.receipts":
                self.receipts += 1
        self.flush()

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(timeout=180)
        self.flush()
        self.probe.close()


def _producer(bootstrap: str, on_error: Callable[[Any], None]) -> Producer:
    return Producer(
        {
            "error_cb": on_error,
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            # A broker restart must not expire what waits in the queue.
            "message.timeout.ms": 300_000,
            "logger": _QUIET,
        }
    )


# -- the run --------------------------------------------------------------------------------


class ChaosRun:
    def __init__(self, scale: Scale, workdir: Path, seed: int | None = None) -> None:
        self.scale = scale
        self.workdir = workdir
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1, 10_000)
        self.rng = random.Random(self.seed)
        self.app_id = f"chaos-{self.seed}-{int(time.time())}"
        self.broker = EmbeddedBroker(workdir / "broker", port=free_port())
        self.registry: EmbeddedRegistryServer | None = None
        self.workers: list[WorkerProcess] = []
        self.sender: Sender | None = None
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.exits: list[str] = []  # workers that exited by themselves (restarted)
        self.diagnoses = 0
        self.pre_acked: set[tuple[str, bytes | None, int]] = set()
        self.broker_lost: list[str] = []  # inputs acknowledged by the broker, then gone
        # (wall time, the traffic's clock, records acknowledged) when the broker was stopped
        self.broker_stops: list[tuple[float, int, int]] = []

    # infrastructure
    def start_infra(self) -> None:
        self.broker.start()
        create_topics(self.broker.bootstrap, PARTITIONS, 1)
        self.registry = EmbeddedRegistryServer("127.0.0.1", 0, self.workdir / "schemas.json")
        self.registry.start()

    def stop_all(self) -> None:
        if self.sender is not None and self.sender.is_alive():
            self.sender.stop_flag.set()
            self.sender.join(timeout=30)
        for w in self.workers:
            if w.proc is not None:
                w.stop(timeout=60)
        if self.registry is not None:
            self.registry.stop()
        self.broker.stop()

    def probe(self) -> GroupProbe:
        return GroupProbe(self.broker.bootstrap, self.app_id)

    def worker(self, i: int) -> WorkerProcess:
        assert self.registry is not None
        return WorkerProcess(
            self.broker.bootstrap, self.registry.url, self.workdir / f"worker{i}", self.app_id
        )

    # the whole run
    def run(self) -> ChaosReport:
        began = time.monotonic()
        if self.registry is None:
            self.start_infra()
        assert self.registry is not None
        codec = Codec(ConfluentRegistryClient(self.registry.url))
        start_ms = int(time.time() * 1000)
        expected_s = 60.0 * len(self.scale.faults)  # generous: the sender is stopped early
        cfg = SimConfig(
            seed=self.seed,
            households=self.scale.households,
            receipts=int(self.scale.rate * expected_s) + 1000,
            products=600,
            stores=120,
            start_ms=start_ms,
            receipts_per_second=self.scale.rate,
        )
        events = list(generate(cfg))
        first = next(i for i, e in enumerate(events) if e["topic"] == "pos.receipts")
        register, traffic = events[:first], events[first:]
        traffic, deferred = prepare_traffic(register + traffic)
        traffic = traffic[first:]
        log(f"seed {self.seed}: {len(register)} register records, {len(traffic)} in the stream")
        known = {e["key"] for e in register if e["topic"] == "customer.cards"}
        # The workers join before anything is written: on the embedded broker a member that
        # joins while another commits makes that commit fail (IllegalGeneration) and the
        # group can then rebalance for minutes (docs/reliability.md, Method). The faults, not the
        # start, are what this suite measures.
        self.workers = [self.worker(0).start(), self.worker(1).start()]
        wait_group_stable(self.workers, PARTITIONS, timeout=180)
        pre = Sender(self.broker.bootstrap, codec, [], known, self.probe)
        pre.inject(register)
        self.pre_acked = pre.acked
        if not self.drain(timeout=180):
            self.notes.append("the register was not processed within 180 s")
        pre.probe.close()
        self.timings["setup"] = time.monotonic() - began
        log(
            f"two workers share the partitions and hold the register after "
            f"{self.timings['setup']:.0f} s"
        )

        self.sender = Sender(self.broker.bootstrap, codec, traffic, known, self.probe)
        self.sender.start()
        traffic_began = time.monotonic()
        self.workers[0].wait_processing(timeout=120)
        self.pause(self.scale.gap_s)
        faults: list[FaultResult] = []
        for kind in self.scale.faults:
            result = self.fault(kind, events, traffic_began)
            faults.append(result)
            log(
                f"fault {len(faults)}/{len(self.scale.faults)} {kind} ({result.target}): "
                f"recovered in {result.recovered_s if result.recovered_s is not None else '-'} s"
            )
            if result.recovered_s is None:
                self.notes.append(f"{kind} never recovered: the rest of the schedule was skipped")
                break
            self.pause(self.scale.gap_s)
        self.timings["faults"] = time.monotonic() - traffic_began
        self.sender.stop()
        if self.sender.errors or self.sender.warnings:
            self.notes.append(f"sender: {(self.sender.errors + self.sender.warnings)[:3]}")
        if self.sender.renewals:
            self.notes.append(
                f"the traffic's producer was replaced {self.sender.renewals} time(s) after a "
                f"fatal error; {self.sender.resent} records sent again"
            )
        if self.exits:
            self.notes.append(f"workers that exited by themselves: {', '.join(self.exits)}")

        drained_at = time.monotonic()
        # After a fault that never recovered, a short wait: the comparison then shows what
        # the stall left unprocessed, and a failing run stays within a CI budget.
        limit = 240.0 if all(f.recovered_s is not None for f in faults) else 45.0
        drained = self.drain(timeout=limit)
        self.timings["drain"] = time.monotonic() - drained_at
        if not drained:
            self.notes.append(f"the group did not drain to lag 0 within {limit:.0f} s")
        compare_at = time.monotonic()
        # The workers' local state against their changelogs, on stopped workers.
        for i, w in enumerate(self.workers):
            if w.proc is not None and w.proc.poll() is None and (code := w.stop(timeout=60)):
                self.notes.append(f"worker{i} stopped with exit code {code} after the drain")
        stale = stale_partitions(
            self.broker.bootstrap,
            self.app_id,
            {
                f"worker{i}": self.workdir / f"worker{i}" / "v1" / "tables"
                for i in range(len(self.workers))
            },
        )
        topics, beyond = self.compare(codec)
        self.timings["dump+replay+compare"] = time.monotonic() - compare_at
        self.timings["total"] = time.monotonic() - began
        return ChaosReport(
            scale=self.scale.name,
            seed=self.seed,
            faults=faults,
            topics=topics,
            beyond_consent=beyond,
            receipts_sent=self.sender.receipts,
            events_sent=self.sender.sent + len(register),
            barriers=self.sender.barriers,
            opt_ins_deferred=deferred,
            seconds=self.timings,
            notes=self.notes,
            traffic_errors=list(self.sender.errors),
            inputs_lost_by_broker=self.broker_lost,
            stale_state=stale,
        )

    # faults
    def fault(self, kind: str, events: list[dict[str, Any]], t0: float) -> FaultResult:
        assert self.sender is not None
        probe = self.probe()
        try:
            high = None
            while high is None:
                high = probe.high()
            committed = probe.committed() or {}
            backlog = sum(max(h - committed.get(k, 0), 0) for k, h in high.items())
            began = time.monotonic()
            who = "-"
            if kind in ("kill9", "sigterm", "empty_state"):
                i = self.rng.randrange(len(self.workers))
                w = self.workers[i]
                who = f"worker{i}"
                assert w.proc is not None
                if kind == "kill9":
                    os.kill(w.proc.pid, signal.SIGKILL)
                    w.proc.wait()
                else:
                    code = w.stop(timeout=60)
                    if code != 0:
                        self.notes.append(f"{kind}: worker{i} exited {code}")
                if kind == "empty_state":
                    shutil.rmtree(self.workdir / f"worker{i}", ignore_errors=True)
                w.start()
            elif kind == "broker_restart":
                who = "broker"
                self.sender.flush()
                at_stop = (time.time(), self.sender.last_ts, len(self.sender.acked))
                # noida-db acknowledges writes that arrive while it writes its shutdown
                # snapshot and then loses them (tests/integration/broker_restart_probe.py
                # shows it without our code; Kafka does not do that on a clean restart).
                # So the clients hold still while it stops -- the traffic waits, the
                # workers are frozen (SIGSTOP) -- and the fault tests what a restart does
                # to the pipeline: lost connections, fenced producers, rejoining the group.
                with self.sender.lock:
                    frozen = [w.proc.pid for w in self.workers if w.proc and w.proc.poll() is None]
                    for pid in frozen:
                        os.kill(pid, signal.SIGSTOP)
                    try:
                        stopped = self.broker.stop()
                        if stopped not in (0, None):
                            self.notes.append(f"broker stop exited {stopped}")
                        self.broker.start()
                    finally:
                        for pid in frozen:
                            os.kill(pid, signal.SIGCONT)
                self.broker_stops.append(at_stop)
            elif kind == "poison":
                who = "4 inputs"
                self.sender.inject(poison_events(self.sender.last_ts))  # the traffic's clock
            elif kind == "oversized":
                who = "receipts"
                self.sender.inject([oversized_receipt(events, self.sender.last_ts)])
            else:
                raise ValueError(kind)
            # Recovered = the group has committed everything written up to a second after
            # the fault was done (the poison included): records that arrived after the fault
            # were processed. Catching up with what was there when it began would pass at
            # once for a worker killed while idle, however long the group then stalls.
            time.sleep(1.0)
            target = None
            while target is None:
                target = probe.high()
            recovered, last = self._wait_caught_up(probe, target, began)
            return FaultResult(kind, who, began - t0, recovered, backlog, last)
        finally:
            probe.close()

    def supervise(self) -> None:
        """Restart a worker that exited, as its supervisor would (the commit rule stops a
        worker with a non-zero exit rather than commit past a failure)."""
        for i, w in enumerate(self.workers):
            if w.proc is not None and w.proc.poll() is not None:
                self.exits.append(f"worker{i} exited {w.proc.returncode}")
                log(f"worker{i} exited with {w.proc.returncode}; restarting it")
                w.start()

    def pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.supervise()
            time.sleep(min(left, 0.5))

    def _wait_caught_up(
        self, probe: GroupProbe, target: dict[tuple[str, int], int], began: float
    ) -> tuple[float | None, str]:
        deadline = began + self.scale.recovery_cap_s
        reached: dict[str, float] = {}
        pending: dict[str, int] | None = None
        diagnosed = False
        while time.monotonic() < deadline:
            self.supervise()
            if not diagnosed and time.monotonic() - began > RECOVERY_LIMIT_S / 2:
                diagnosed = True
                self.diagnose(pending)
            behind = probe.behind(target)
            if behind is not None:
                now = round(time.monotonic() - began, 1)
                for k in (pending or {}).keys() - behind.keys():
                    reached[k] = now
                pending = behind
                if not behind:
                    last = max(reached, key=lambda k: reached[k]) if reached else ""
                    return now, f"{last} {reached[last]:.0f} s" if last else ""
            time.sleep(0.5)
        left = ", ".join(f"{k} ({n} behind)" for k, n in sorted((pending or {}).items()))
        return None, f"never: {left}"

    def diagnose(self, behind: dict[str, int] | None) -> None:
        """A slow recovery: keep what the workers are doing (py-spy stacks, /metrics) for
        whoever investigates it; the paths go into the report's notes."""
        import subprocess
        import urllib.request

        self.diagnoses += 1
        path = self.workdir / f"slow-recovery-{self.diagnoses}.txt"
        parts = [f"behind: {behind}"]
        spy = Path(sys.executable).with_name("py-spy")
        for i, w in enumerate(self.workers):
            if w.proc is None or w.proc.poll() is not None:
                continue
            parts.append(f"== worker{i} pid {w.proc.pid}")
            if spy.exists():
                done = subprocess.run(
                    [str(spy), "dump", "--pid", str(w.proc.pid)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                parts.append(done.stdout + done.stderr)
            try:
                url = f"http://127.0.0.1:{w.web_port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
                    parts += [
                        line
                        for line in resp.read().decode().splitlines()
                        if line.startswith(("purchase_stream_assigned", "purchase_stream_consumer"))
                    ]
            except OSError as exc:
                parts.append(f"/metrics: {exc}")
        path.write_text("\n".join(parts))
        self.notes.append(f"slow recovery: stacks and metrics in {path}")

    def drain(self, timeout: float) -> bool:
        probe = self.probe()
        try:
            deadline = time.monotonic() + timeout
            quiet = 0
            while time.monotonic() < deadline:
                self.supervise()
                quiet = quiet + 1 if probe.lag() == 0 else 0
                if quiet >= 6:  # 3 s at lag 0: nothing more in flight between stages
                    return True
                time.sleep(0.5)
            return False
        finally:
            probe.close()

    # the comparison
    def compare(self, codec: Codec) -> tuple[list[TopicComparison], list[str]]:
        dump_path = self.workdir / "dump.jsonl"
        with open(dump_path, "wb") as out:
            stats = dump(self.broker.bootstrap, codec, out, progress=None)
        log(f"dumped {stats['records']} input records ({stats['raw_values']} raw)")
        rcodec = Codec(InMemoryRegistry())
        replayed: list[dict[str, Any]] = []
        driver = Driver(
            load_rules(),
            self.workdir / "replay",
            codec=rcodec,
            sink=lambda o: replayed.append(_canon_output(rcodec, o)),
        )
        try:
            with open(dump_path, "rb") as f:
                replay_events(driver, f)
        finally:
            driver.close()
        workers: list[dict[str, Any]] = []
        for topic in OUTPUTS:
            for rec in read_all(self.broker.bootstrap, topic, timeout=60):
                workers.append(_canon_output(codec, Outgoing(topic, rec.key, rec.value)))
        log(f"replay: {len(replayed)} outputs; workers: {len(workers)} output records")
        dumped = [orjson.loads(line) for line in dump_path.read_bytes().splitlines()]
        consents = [e for e in dumped if e["topic"] == "customer.consents"]
        held = {
            (e["topic"], None if e["key"] is None else e["key"].encode(), e["timestamp"])
            for e in dumped
        }
        acked = set(self.pre_acked) | (self.sender.acked if self.sender else set())
        missing = sorted(acked - held, key=lambda r: r[2])
        self.broker_lost = [f"{t}@{ts}" for t, _k, ts in missing]
        if missing:
            stops = ", ".join(f"{ts}" for _w, ts, _n in self.broker_stops) or "none"
            self.notes.append(
                f"{len(missing)} input records the broker acknowledged are not in the topics: "
                f"traffic times {missing[0][2]}..{missing[-1][2]}; the traffic's clock at each "
                f"broker stop (every record sent before it was acknowledged): {stops}"
            )
        return compare_outputs(workers, replayed), beyond_consent(workers, consents)


def _canon_output(codec: Codec, out: Outgoing) -> dict[str, Any]:
    """An output record as data, without what legitimately differs between two runs: where
    and when a dead letter was written (and the input's schema id inside its bytes), the
    processing clock of running figures, the time of an audit record."""
    rec = decoded_output(codec, out)
    value = rec["value"]
    if value is None:
        return rec
    if rec["topic"] == "deadletters":
        value = {k: v for k, v in value.items() if k not in ("partition", "offset", "failed_at")}
        value.pop("error", None)  # the message may name a registry's schema id
        raw = base64.b64decode(value["value"]) if value.get("value") else None
        value["value"] = _input_as_data(codec, value["topic"], raw)
    elif rec["topic"] in ("smobiili.counters", "household.bonus"):
        value = {k: v for k, v in value.items() if k != "updated_at"}
    elif rec["topic"] == "audit.log":
        value = audit_as_compared(value)
    return {**rec, "value": value}


def audit_as_compared(value: dict[str, Any]) -> dict[str, Any]:
    """An audit record without what depends on timing: its time, and how many items a
    revocation purged. A consent change and a receipt of the same person arrive on different
    topics, whose relative order the live workers do not fix: the receipt may be stored and
    then purged (replay's order, "deleted": 1) or arrive after the revocation and never be
    stored ("deleted": 0). Both leave nothing beyond consent, which :func:`beyond_consent`
    checks on its own; the record must still be there, for the same person, store and flag."""
    value = {k: v for k, v in value.items() if k != "at"}
    if value.get("action") == "revocation_purge" and isinstance(value.get("detail"), str):
        detail = orjson.loads(value["detail"])
        value["detail"] = {k: v for k, v in detail.items() if not isinstance(v, int)}
    return value


def _input_as_data(codec: Codec, topic: str, raw: bytes | None) -> Any:
    if raw is None or topic not in TOPICS:
        return None if raw is None else base64.b64encode(raw).decode()
    try:
        return codec.decode(topic, raw)
    except (DecodeError, KeyError):
        return base64.b64encode(raw).decode()


def _key(r: dict[str, Any]) -> str:
    return orjson.dumps(r["value"], option=orjson.OPT_SORT_KEYS).decode()


def compare_outputs(
    workers: list[dict[str, Any]], replayed: list[dict[str, Any]]
) -> list[TopicComparison]:
    """Every output topic, compared the way its records are meant to be read.

    - Streams (``receipts.totals``, ``deadletters``, ``audit.log``, ``recall.*``): the set of
      distinct records (a worker may repeat a record after a crash, never change it). A
      receipt with two different total records is counted twice.
    - Compacted stores: the final value per key, a tombstone being the same as no key.
    - ``smobiili.counters`` (the month is in the value): the last figures per customer and
      month; ``removed`` is the same as none.
    Where a figure has a receipt count, a lower count is *lost*, a higher *double*.
    """
    by_topic: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
        t: ([], []) for t in OUTPUTS
    }
    for r in workers:
        by_topic[r["topic"]][0].append(r)
    for r in replayed:
        by_topic[r["topic"]][1].append(r)
    out = []
    for topic in OUTPUTS:
        got, want = by_topic[topic]
        spec = TOPICS[topic]
        cmp = TopicComparison(topic, 0)
        if topic == "smobiili.counters":
            _compare_final(cmp, _last_counters(got), _last_counters(want))
        elif spec.compacted:
            _compare_final(cmp, _final(got), _final(want))
        else:
            _compare_sets(cmp, topic, got, want)
        out.append(cmp)
    return out


def _final(records: list[dict[str, Any]]) -> dict[str, Any]:
    final: dict[str, Any] = {}
    for r in records:
        final[r["key"]] = r["value"]
    return {k: v for k, v in final.items() if v is not None}


def _last_counters(records: list[dict[str, Any]]) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for r in records:
        if r["value"] is not None:
            last[f"{r['key']}|{r['value']['month']}"] = r["value"]
    return {k: v for k, v in last.items() if not v["removed"]}


def _compare_final(cmp: TopicComparison, got: dict[str, Any], want: dict[str, Any]) -> None:
    keys = sorted(set(got) | set(want))
    cmp.compared = len(keys)
    for k in keys:
        g, w = got.get(k), want.get(k)
        if g == w:
            continue
        if g is None:
            cmp.lost.append(k)
        elif w is None:
            cmp.double.append(k)
        elif "receipt_count" in g and g["receipt_count"] != w["receipt_count"]:
            (cmp.lost if g["receipt_count"] < w["receipt_count"] else cmp.double).append(k)
        else:
            cmp.differ.append(k)


def _compare_sets(
    cmp: TopicComparison, topic: str, got: list[dict[str, Any]], want: list[dict[str, Any]]
) -> None:
    g = {_key(r): r for r in got}
    w = {_key(r): r for r in want}
    cmp.compared = len(set(g) | set(w))
    if topic == "receipts.totals":
        by_id: dict[str, set[str]] = {}
        for k, r in g.items():
            by_id.setdefault(r["value"]["receipt_id"], set()).add(k)
        cmp.double = sorted(rid for rid, ks in by_id.items() if len(ks) > 1)
        want_ids = {r["value"]["receipt_id"] for r in w.values()}
        cmp.lost = sorted(want_ids - set(by_id))
        extra = sorted(set(by_id) - want_ids)
        cmp.double += extra
        cmp.differ = sorted(
            rid
            for rid in want_ids & set(by_id)
            if len(by_id[rid]) == 1 and next(iter(by_id[rid])) not in w
        )
        return
    label = (
        (lambda r: f"{r['value']['reason']}:{r['value']['topic']}:{r['value']['key']}")
        if topic == "deadletters"
        else (lambda r: str(r["key"]))
    )
    cmp.lost = sorted(label(w[k]) for k in set(w) - set(g))
    cmp.double = sorted(label(g[k]) for k in set(g) - set(w))


def beyond_consent(workers: list[dict[str, Any]], consents: list[dict[str, Any]]) -> list[str]:
    """Line items (and counters) the workers hold in a store its owner's consent, as the input
    topic states it, does not allow: an independent check of the privacy rule (docs/domain.md
    §3, "Consent in time"), not a comparison with ``replay``.

    Per customer and flag: ``on_since`` is the start of the current unbroken run of "on"
    records, never earlier than the latest record with the flag off; versions not above the
    one held are ignored; a tombstone erases the customer.
    """
    state: dict[str, dict[str, Any]] = {}
    for e in consents:
        cid = e["key"]
        if e.get("value_b64") is not None:
            continue
        value = e["value"]
        held = state.get(cid)
        if value is None:
            state[cid] = {"erased": True, "version": 1 << 62}
            continue
        if held is not None and (held.get("erased") or value["version"] <= held["version"]):
            continue
        new = held or {"version": 0, "flags": {}}
        for flag in CONSENT_FLAGS:
            f = new["flags"].setdefault(flag, {"on": False, "on_since": None, "last_off": 0})
            if value[flag] and not f["on"]:
                f["on"], f["on_since"] = True, max(value["effective_at"], f["last_off"])
            elif not value[flag]:
                f["on"] = False
                f["last_off"] = max(f["last_off"], value["effective_at"])
        new["version"] = value["version"]
        state[cid] = new

    def allowed(cid: str, flag: str, at: int | None) -> bool:
        held = state.get(cid)
        if held is None or held.get("erased"):
            return False
        f = held["flags"][flag]
        return bool(f["on"]) and (at is None or at >= f["on_since"])

    found = []
    finals = {t: _final([r for r in workers if r["topic"] == t]) for t in GATED_FLAGS}
    finals["smobiili.counters"] = _last_counters(
        [r for r in workers if r["topic"] == "smobiili.counters"]
    )
    for topic, flag in GATED_FLAGS.items():
        for key, v in finals[topic].items():
            if topic == "ereceipts.archive":
                at = v["receipt"]["purchased_at"]
            else:
                at = v.get("purchased_at")
            if not allowed(v["customer_id"], flag, at):
                found.append(f"{topic}:{key}")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the chaos suite's run, on its own")
    p.add_argument("--full", action="store_true", help="the long schedule (make chaos)")
    p.add_argument("--seed", type=int)
    p.add_argument("--workdir", type=Path, help="kept after the run (default: a temp dir)")
    p.add_argument("--json", type=Path, help="write the report here as JSON")
    p.add_argument("--faults", help="comma-separated schedule instead of the scale's own")
    args = p.parse_args(argv)
    import tempfile

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    scale = FULL if args.full else SHORT
    if args.faults:
        from dataclasses import replace

        scale = replace(scale, name=f"{scale.name}-custom", faults=tuple(args.faults.split(",")))
    run = ChaosRun(scale, workdir, seed=args.seed)
    try:
        report = run.run()
    finally:
        run.stop_all()
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    ok = (
        all(f.ok for f in report.faults)
        and len(report.faults) == len(run.scale.faults)
        and report.lost == report.double == report.differ == len(report.beyond_consent) == 0
        and not report.traffic_errors
        and not report.inputs_lost_by_broker
        and not report.stale_state
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["FULL", "SHORT", "ChaosReport", "ChaosRun", "Scale"]
