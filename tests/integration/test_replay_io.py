"""Replay files both ways on the real broker: file -> ``purchase-stream produce`` -> topics ->
``purchase-stream dump`` -> the same records, run as a user runs the commands."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from stream.local.broker import EmbeddedBroker
from stream.local.registry_server import EmbeddedRegistryServer
from stream.serde.codec import Codec
from stream.serde.registry_store import InMemoryRegistry
from stream.settings import load_rules
from stream.simulator.config import SimConfig
from stream.simulator.generator import bad_bytes_replay_events, generate
from stream.tools.replay_io import TOPIC_RANK

REPO = Path(__file__).resolve().parents[2]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )


_CODEC = Codec(InMemoryRegistry())


def canon(event: dict[str, Any]) -> bytes:
    """The event as the record it denotes: a field the file leaves out and the schema
    defaults (e.g. a card's optional ``version``) comes back from the broker as its default."""
    if event.get("value") is not None:
        topic = event["topic"]
        event = {**event, "value": _CODEC.decode(topic, _CODEC.encode(topic, event["value"]))}
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def test_produce_then_dump_gives_back_the_same_records(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path
) -> None:
    broker = broker_factory("replay-io", topics=True)
    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "schemas.json").start()
    try:
        # Recent timestamps: records older than a topic's retention would be deleted on arrival.
        start = int(time.time() * 1000) - 3_600_000
        events = list(generate(SimConfig(seed=11, households=40, receipts=400, start_ms=start)))
        # Poison records on every input topic travel as raw bytes (value_b64) both ways.
        events += bad_bytes_replay_events(events[-1]["timestamp"])
        events.append(
            {
                "topic": "product.catalog",
                "key": "0000000000000",
                "value_b64": "3q2+7w==",
                "timestamp": events[-1]["timestamp"],
            }
        )
        src = tmp_path / "events.jsonl"
        src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
        env = {
            "PURCHASE_STREAM_BROKER": broker.bootstrap,
            "PURCHASE_STREAM_SCHEMA_REGISTRY_URL": registry.url,
        }

        produced = cli(env, "produce", str(src))
        assert produced.returncode == 0, produced.stderr
        stats = orjson.loads(produced.stdout)
        assert stats["sent"] == stats["delivered"] == len(events)
        assert "produce: " in produced.stderr  # the progress line

        out = tmp_path / "dump.jsonl"
        dumped = cli(env, "dump", "--out", str(out))
        assert dumped.returncode == 0, dumped.stderr
        assert "dump: " in dumped.stderr
    finally:
        registry.stop()

    back = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    # The same records, each exactly once (the producer is idempotent: no duplicates).
    assert Counter(canon(e) for e in back) == Counter(canon(e) for e in events)
    assert sum("value_b64" in e for e in back) == sum("value_b64" in e for e in events) > 4

    # In the dump's order: per key (one key = one partition) the produced order is kept, and
    # the file is ordered by (timestamp, reference data first) wherever partitions interleave.
    def per_key(evs: list[dict[str, Any]]) -> dict[tuple[str, Any], list[bytes]]:
        out: dict[tuple[str, Any], list[bytes]] = {}
        for e in evs:
            out.setdefault((e["topic"], e["key"]), []).append(canon(e))
        return out

    assert per_key(back) == per_key(events)
    keys = [(e["timestamp"], TOPIC_RANK[e["topic"]]) for e in back]
    assert keys == sorted(keys)

    # And replay reads the dump as it reads the original: the same outputs.
    def replay_outputs(path: Path) -> Counter[str]:
        state, out_file = tmp_path / f"state-{path.stem}", tmp_path / f"out-{path.stem}.jsonl"
        from stream.tools.replay import replay_file

        replay_file(path, load_rules(), state, out_path=out_file)
        return Counter(
            canon(o).decode()
            for o in map(orjson.loads, out_file.read_bytes().splitlines())
            if o["topic"] in ("receipts.totals", "household.bonus", "aggregates.group")
        )

    assert replay_outputs(out) == replay_outputs(src)
