"""The in-process driver: the project's TopologyTestDriver, backfill tool and benchmark harness.

``Driver.feed()`` takes a record as the broker would deliver it (topic, key bytes, value
bytes, broker timestamp) and runs it through :class:`stream.engine.runner.Runner` and the stages
of :mod:`topologies.pipeline` — the very code the Faust worker runs — passing each emit
whose topic a stage reads on to that stage, breadth first, before the next input record.
State is RocksDB (one rocksdict database per stage under the state dir) or memory.

``replay_file()`` reads the JSONL event format (docs/architecture.md, "The replay file"):
each line is validated by encoding it with the Avro schema of its topic, exactly as a
producer would, so a line the broker could never have carried is reported with its line
number and dead-lettered.
"""

from __future__ import annotations

import base64
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from stream.engine import packing
from stream.engine.metrics import Metrics
from stream.engine.runner import DLQ_TOPIC, Outgoing, RawRecord, Runner
from stream.engine.state import CachedCatalog, RocksState
from stream.local.topics import TOPICS
from stream.serde.codec import Codec, EncodeError
from stream.serde.registry_store import InMemoryRegistry
from topologies import catalog as catalog_topology
from topologies.pipeline import STAGE_FOR_TOPIC, STAGES
from topologies.records import AUDIT_TOPIC, Reject, audit_record
from topologies.rules import Rules
from topologies.state import MemoryState, State

INPUT_TOPICS = ("product.catalog", "customer.cards", "customer.consents", "pos.receipts")
OutputSink = Callable[[Outgoing], None]


@dataclass
class Summary:
    lines: int = 0
    bad_lines: int = 0
    records_in: Counter[str] = field(default_factory=Counter)
    records_out: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        receipts = self.records_in.get("pos.receipts", 0)
        return {
            "lines": self.lines,
            "bad_lines": self.bad_lines,
            "records_in": dict(sorted(self.records_in.items())),
            "records_out": dict(sorted(self.records_out.items())),
            "dead_letters": dict(sorted(self.dead_letters.items())),
            "elapsed_s": round(self.elapsed_s, 3),
            "receipts_per_s": round(receipts / self.elapsed_s, 1) if self.elapsed_s else None,
        }


class Driver:
    def __init__(
        self,
        rules: Rules,
        state_dir: str | Path | None = None,
        codec: Codec | None = None,
        metrics: Metrics | None = None,
        sink: OutputSink | None = None,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir else None
        if codec is None:
            registry_path = self.state_dir / "schemas.json" if self.state_dir else None
            codec = Codec(InMemoryRegistry(registry_path))
        self.codec = codec
        self.states: dict[str, State] = {}
        for stage in STAGES:
            if self.state_dir is not None:
                self.states[stage.name] = RocksState(self.state_dir / stage.name)
            else:
                self.states[stage.name] = MemoryState()
        self.metrics = metrics or Metrics()
        self.catalog = CachedCatalog(self.states[catalog_topology.STAGE], catalog_topology.key)
        self.runner = Runner(codec, rules, self.metrics, catalog=self.catalog)
        # One partition per topic here, and every record is drained at once (packs of one).
        self.packer = packing.Packer(rules.record_limit, lambda _topic, _key: 0)
        self.rules = rules
        self.sink = sink
        self.summary = Summary()
        self._offsets: Counter[str] = Counter()
        self.clock_ms = 0

    def feed(self, topic: str, key: bytes | None, value: bytes | None, timestamp: int) -> None:
        self.clock_ms = max(self.clock_ms, timestamp)
        queue = deque([self._record(topic, key, value, timestamp)])
        self.summary.records_in[topic] += 1
        while queue:
            rec = queue.popleft()
            stage = STAGE_FOR_TOPIC[rec.topic]
            if stage.is_global and rec.key is not None:
                self.catalog.invalidate(rec.key.decode("utf-8", "replace"))
            outs = self.runner.process(stage, self.states[stage.name], rec)
            # The worker's packing (stream/engine/packing.py) with a batch of one record.
            sends = packing.sends(self.packer, stage, rec, outs) + self.packer.drain()
            for out, _ts in sends:
                if out.topic in STAGE_FOR_TOPIC:
                    queue.append(self._record(out.topic, out.key, out.value, timestamp))
                if not TOPICS[out.topic].internal:
                    # An output may also feed a stage (receipts.totals -> Bonus ledger).
                    self._emit(out)

    def tick(self, now_ms: int) -> None:
        """Move the processing clock: run each stage's time-driven work (sweeps, expiry)."""
        self.clock_ms = max(self.clock_ms, now_ms)
        for stage in STAGES:
            for out in self.runner.tick(stage, self.states[stage.name], now_ms):
                self._emit(out)

    def bad_line(self, lineno: int, code: str, detail: str, raw: bytes) -> None:
        """A line that could not become a record: reported and dead-lettered, never fatal."""
        self.summary.bad_lines += 1
        rec = RawRecord("replay", 0, lineno, self.clock_ms, None, raw)
        self._emit(self.runner.dead_letter("replay", rec, Reject(code, detail)))

    def close(self) -> None:
        for state in self.states.values():
            close = getattr(state, "close", None)
            if close is not None:
                close()

    def _record(self, topic: str, key: bytes | None, value: bytes | None, ts: int) -> RawRecord:
        offset = self._offsets[topic]
        self._offsets[topic] += 1
        return RawRecord(topic, 0, offset, ts, key, value)

    def _emit(self, out: Outgoing) -> None:
        self.summary.records_out[out.topic] += 1
        if out.topic == DLQ_TOPIC:
            dl = self.codec.decode(DLQ_TOPIC, out.value)
            if dl is not None:
                self.summary.dead_letters[dl["reason"]] += 1
        if self.sink is not None:
            self.sink(out)


def encode_event(
    codec: Codec, event: dict[str, Any]
) -> tuple[str, bytes | None, bytes | None, int]:
    """A replay-file event -> (topic, key bytes, value bytes, timestamp); raises ValueError."""
    topic = event.get("topic")
    if topic not in INPUT_TOPICS:
        raise ValueError(f"topic must be one of {', '.join(INPUT_TOPICS)}, got {topic!r}")
    timestamp = event.get("timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
        raise ValueError("timestamp must be epoch millis (a non-negative integer)")
    key = event.get("key")
    if key is not None and not isinstance(key, str):
        raise ValueError("key must be a string or null")
    value: bytes | None
    if "value_b64" in event:
        # Raw bytes exactly as a (possibly broken) producer sent them: lets a replay file
        # carry undecodable records, which then take the same dead-letter path as on Kafka.
        value = base64.b64decode(event["value_b64"])
    else:
        record = event.get("value")
        if record is not None:
            _validate_strictly(topic, record)
        value = codec.encode(topic, record)
    return topic, codec.encode_key(key), value, timestamp


def _validate_strictly(topic: str, record: Any) -> None:
    """Full Avro validation: the encoder alone would, e.g., truncate 1.5 into a long field."""
    from fastavro.validation import ValidationError, validate

    from stream.serde.schemas import schema

    name = TOPICS[topic].schema
    if name is None:
        raise ValueError(f"topic {topic!r} has no Avro schema")
    parsed = schema(name)
    try:
        validate(record, parsed, raise_errors=True, strict=True)
    except ValidationError as exc:
        raise EncodeError(f"{topic}: record does not match {name}: {exc}") from None
    unknown = _unknown_fields(record, parsed, "")
    if unknown:
        # Avro would drop these silently; in a replay file they are typos that lose data.
        raise EncodeError(f"{topic}: fields not in {name}: {', '.join(unknown)}")


def _unknown_fields(datum: Any, schema: Any, path: str) -> list[str]:
    if isinstance(schema, list):  # union: check against the branch that is a record, if any
        return [u for branch in schema for u in _unknown_fields(datum, branch, path)]
    if not isinstance(schema, dict):
        return []
    if schema.get("type") == "record" and isinstance(datum, dict):
        fields = {f["name"]: f["type"] for f in schema["fields"]}
        out = [f"{path}{k}" for k in datum if k not in fields]
        for k, t in fields.items():
            if k in datum:
                out += _unknown_fields(datum[k], t, f"{path}{k}.")
        return out
    if schema.get("type") == "array" and isinstance(datum, list):
        return [
            u
            for i, item in enumerate(datum)
            for u in _unknown_fields(item, schema["items"], f"{path}{i}.")
        ]
    return []


def replay_events(
    driver: Driver,
    lines: Iterable[bytes],
    progress: IO[str] | None = None,
    progress_every: int = 50_000,
) -> Summary:
    started = time.perf_counter()
    s = driver.summary
    for lineno, raw in enumerate(lines, start=1):
        s.lines += 1
        if not raw.strip():
            continue
        try:
            event = orjson.loads(raw)
            if not isinstance(event, dict):
                raise ValueError("a line must be a JSON object")
            topic, key, value, ts = encode_event(driver.codec, event)
        except orjson.JSONDecodeError as exc:
            _report(progress, lineno, "invalid_json", str(exc))
            driver.bad_line(lineno, "invalid_json", str(exc), raw)
            continue
        except (EncodeError, ValueError, TypeError, KeyError) as exc:
            code = "schema_mismatch" if isinstance(exc, EncodeError) else "invalid_event"
            _report(progress, lineno, code, str(exc))
            driver.bad_line(lineno, code, str(exc)[:500], raw)
            continue
        driver.feed(topic, key, value, ts)
        if progress is not None and s.lines % progress_every == 0:
            rate = s.lines / max(time.perf_counter() - started, 1e-9)
            print(f"  {s.lines:>10,} lines  {rate:>9,.0f} lines/s", file=progress, flush=True)
    s.elapsed_s += time.perf_counter() - started
    return s


def _report(progress: IO[str] | None, lineno: int, code: str, detail: str) -> None:
    print(f"line {lineno}: {code}: {detail[:300]}", file=progress or sys.stderr)


def decoded_output(codec: Codec, out: Outgoing) -> dict[str, Any]:
    """An output record as plain JSON-able data (bytes fields as base64), for files and tests."""
    value = codec.decode(out.topic, out.value)
    if value is not None and out.topic == DLQ_TOPIC:
        value = {
            **value,
            "key": _b64(value["key"]),
            "value": _b64(value["value"]),
        }
    return {"topic": out.topic, "key": out.key.decode() if out.key else None, "value": value}


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def replay_file(
    path: str | Path,
    rules: Rules,
    state_dir: str | Path | None,
    now_ms: int | None = None,
    out_path: str | Path | None = None,
    progress: IO[str] | None = None,
) -> Summary:
    """Replay a JSONL file; with ``out_path``, write every output record (decoded) as JSONL."""
    out_file = open(out_path, "wb") if out_path else None  # noqa: SIM115 - closed below
    driver = Driver(rules, state_dir)
    if out_file is not None:
        codec = driver.codec

        def sink(out: Outgoing) -> None:
            out_file.write(orjson.dumps(decoded_output(codec, out)) + b"\n")

        driver.sink = sink
    try:
        with open(path, "rb") as f:
            summary = replay_events(driver, f, progress=progress)
        if now_ms is not None:
            driver.tick(now_ms)
        return summary
    finally:
        driver.close()
        if out_file is not None:
            out_file.close()


AUDIT_FILE = "audit.log.jsonl"


def append_audit(
    state_dir: str | Path,
    actor: str,
    action: str,
    subject: str | None,
    purpose: str,
    outcome: str,
    detail: dict[str, Any],
) -> None:
    """Append one audit record to ``<state_dir>/audit.log.jsonl``: the replay world's
    ``audit.log`` topic (same records, append-only), for reads made by the CLI."""
    record = audit_record(int(time.time() * 1000), actor, action, subject, purpose, outcome, detail)
    with open(Path(state_dir) / AUDIT_FILE, "ab") as f:
        f.write(orjson.dumps({"topic": AUDIT_TOPIC, "key": None, "value": record}) + b"\n")


def recall_on_state(
    state_dir: str | Path, rules: Rules, request: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run a recall request through the personal-routing stage on replay state (the same
    step the worker runs per partition). Returns the notifications; the run's audit records
    are appended to ``<state_dir>/audit.log.jsonl``."""
    driver = Driver(rules, state_dir)
    codec = driver.codec
    found: list[dict[str, Any]] = []
    audit_path = Path(state_dir) / AUDIT_FILE

    with open(audit_path, "ab") as audit:

        def sink(out: Outgoing) -> None:
            record = decoded_output(codec, out)
            if out.topic == "audit.log":
                audit.write(orjson.dumps(record) + b"\n")
            elif out.topic == "recall.notifications":
                found.append(record["value"])

        driver.sink = sink
        try:
            driver.feed(
                "recall.requests",
                codec.encode_key(request["recall_id"]),
                codec.encode("recall.requests", request),
                max(driver.clock_ms, request["requested_at"]),
            )
        finally:
            driver.close()
    return found


__all__ = ["Driver", "Summary", "replay_events", "replay_file", "encode_event", "TOPICS"]
