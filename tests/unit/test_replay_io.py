"""Replay files both ways, without a broker: the dump's order and record form, and what
``produce`` sends for each line (a recording producer stands in for librdkafka)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.local.offsets import Record
from stream.serde.codec import Codec
from stream.serde.registry_store import InMemoryRegistry
from stream.simulator.config import SimConfig
from stream.simulator.generator import bad_bytes_replay_events, generate
from stream.tools.replay import encode_event
from stream.tools.replay_io import merge_partitions, produce_file, record_event

T0 = 1_793_599_200_000


def rec(partition: int, offset: int, ts: int, key: bytes | None = b"k") -> Record:
    return Record(key, b"v", partition, offset, ts)


def test_merge_keeps_each_partition_in_offset_order_and_interleaves_by_time() -> None:
    by_topic = {
        # a producer may set timestamps that go backwards within a partition: offset order wins
        "pos.receipts": [rec(0, 1, 50), rec(0, 0, 10), rec(1, 0, 20), rec(0, 2, 30)],
        "customer.cards": [rec(0, 0, 20), rec(2, 0, 5)],
    }
    got = [(t, r.partition, r.offset) for t, r in merge_partitions(by_topic)]
    assert got == [
        ("customer.cards", 2, 0),  # ts 5
        ("pos.receipts", 0, 0),  # ts 10
        ("customer.cards", 0, 0),  # ts 20: reference data before receipts at equal times
        ("pos.receipts", 1, 0),  # ts 20
        ("pos.receipts", 0, 1),  # ts 50, but offset 1 must precede offset 2 (ts 30)
        ("pos.receipts", 0, 2),
    ]
    for topic, records in by_topic.items():
        per_partition: dict[int, list[int]] = {}
        for t, r in merge_partitions(by_topic):
            if t == topic:
                per_partition.setdefault(r.partition, []).append(r.offset)
        assert all(offsets == sorted(offsets) for offsets in per_partition.values())
        assert sum(len(v) for v in per_partition.values()) == len(records)


def test_record_event_decodes_avro_keeps_raw_bytes_and_tombstones() -> None:
    codec = Codec(InMemoryRegistry())
    events = list(generate(SimConfig(seed=3, households=5, receipts=5, start_ms=T0)))
    receipt = next(e for e in events if e["topic"] == "pos.receipts")
    _, key, value, ts = encode_event(codec, receipt)
    out = record_event(codec, "pos.receipts", Record(key, value, 2, 7, ts))
    assert out == receipt  # the same line replay read

    tomb = record_event(codec, "customer.cards", Record(b"7001", None, 0, 1, T0))
    assert tomb == {"topic": "customer.cards", "key": "7001", "timestamp": T0, "value": None}

    for bad in bad_bytes_replay_events(T0):
        raw = base64.b64decode(bad["value_b64"])
        key_bytes = None if bad["key"] is None else bad["key"].encode()
        got = record_event(codec, bad["topic"], Record(key_bytes, raw, 0, 0, T0))
        assert got == bad, "undecodable bytes must stay as they were"

    with pytest.raises(ValueError, match="not UTF-8"):
        record_event(codec, "pos.receipts", Record(b"\xff\xfe", value, 0, 3, T0))


class RecordingProducer:
    """librdkafka's Producer surface as ``produce_file`` uses it; delivers at once."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes | None, bytes | None, int]] = []

    def list_topics(self, timeout: float) -> None:
        return None

    def produce(self, topic: str, key: Any, value: Any, timestamp: int, on_delivery: Any) -> None:
        self.sent.append((topic, key, value, timestamp))
        on_delivery(None, None)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_produce_file_sends_keys_values_timestamps_and_reports_bad_lines(tmp_path: Path) -> None:
    codec = Codec(InMemoryRegistry())
    events = list(generate(SimConfig(seed=4, households=10, receipts=30, start_ms=T0)))
    events += bad_bytes_replay_events(T0 + 1)
    lines = [orjson.dumps(e) for e in events]
    lines.insert(3, b"{not json")
    lines.insert(9, orjson.dumps({"topic": "pos.receipts", "key": "x", "timestamp": -1}))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    made: list[RecordingProducer] = []

    def factory(config: dict[str, Any]) -> RecordingProducer:
        made.append(RecordingProducer(config))
        return made[-1]

    progress = io.StringIO()
    stats = produce_file(
        path, bootstrap="unused:1", codec=codec, progress=progress, producer_factory=factory
    )
    producer = made[0]
    assert producer.config["enable.idempotence"] is True
    assert producer.config["acks"] == "all"
    assert producer.config["partitioner"] == "murmur2_random"
    assert stats["sent"] == stats["delivered"] == len(events)
    assert stats["bad_lines"] == 2
    assert "line 4: not sent" in progress.getvalue()
    assert "line 10: not sent" in progress.getvalue()
    assert "produce: " in progress.getvalue() and "(done)" in progress.getvalue()
    assert producer.sent == [encode_event(codec, e) for e in events]
