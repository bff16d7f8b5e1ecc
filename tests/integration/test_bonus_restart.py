"""The household Bonus ledger survives worker crashes: nothing lost, nothing counted twice.

Receipts stream into the embedded broker while the worker is killed (SIGKILL, no clean
shutdown) twice: once restarted on its own RocksDB state, once on an empty state directory
so that every table is restored from its changelog. The final ``household.bonus`` value of
every household-month must equal what ``replay`` computes from the same events.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from stream.admin import create_topics, read_all
from stream.broker import EmbeddedBroker
from stream.codec import Codec
from stream.replay import Driver, encode_event
from stream.runner import Outgoing
from stream.schema_registry import EmbeddedRegistryServer, HttpRegistryClient, InMemoryRegistry
from stream.settings import load_rules
from stream.simulator import SimConfig, generate
from tests.integration.worker_harness import WorkerProcess, phases, produce_events


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory):
    broker = EmbeddedBroker(tmp_path_factory.mktemp("bonus-broker")).start()
    try:
        create_topics(broker.bootstrap, 4, 1)
        yield broker
    finally:
        broker.stop()


def _kill(worker: WorkerProcess) -> None:
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait(timeout=30)


def _final_tallies(codec: Codec, records: list[tuple[bytes | None, bytes | None]]) -> dict:
    final: dict[str, Any] = {}
    for key, value in records:
        assert key is not None
        tally = codec.decode("household.bonus", value)
        final[key.decode()] = (
            None if tally is None else {k: v for k, v in tally.items() if k != "updated_at"}
        )
    return final


def test_tallies_after_two_crashes_equal_replay(own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    cfg = SimConfig(
        seed=9, households=150, receipts=2500, start_ms=now - 1_800_000, receipts_per_second=2.0
    )
    a, b, c = phases(list(generate(cfg)))
    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "schemas.json").start()
    app_id = f"crash-{uuid.uuid4().hex[:8]}"
    codec = Codec(HttpRegistryClient(registry.url))
    state = tmp_path / "worker-state"
    worker = WorkerProcess(own_broker.bootstrap, registry.url, state, app_id).start()
    try:
        produce_events(own_broker.bootstrap, codec, a)
        worker.wait_idle()

        done = threading.Event()

        def stream_receipts() -> None:
            try:
                for i in range(0, len(b), 100):  # about 500 records/s: a stream, not a burst
                    produce_events(own_broker.bootstrap, codec, b[i : i + 100])
                    time.sleep(0.2)
            finally:
                done.set()

        producer = threading.Thread(target=stream_receipts, daemon=True)
        producer.start()
        time.sleep(3)
        _kill(worker)  # crash 1: restart on the same RocksDB state
        worker = WorkerProcess(own_broker.bootstrap, registry.url, state, app_id).start()
        time.sleep(6)
        _kill(worker)  # crash 2: restart with nothing on disk, restore from changelogs
        worker = WorkerProcess(
            own_broker.bootstrap, registry.url, tmp_path / "fresh-state", app_id
        ).start()
        assert done.wait(timeout=120)
        producer.join()
        worker.wait_idle(timeout=300)
        produce_events(own_broker.bootstrap, codec, c)
        worker.wait_idle(timeout=300)
        assert worker.stop() == 0, worker.log_tail()
        on_broker = _final_tallies(
            codec, [(r.key, r.value) for r in read_all(own_broker.bootstrap, "household.bonus")]
        )
    finally:
        worker.stop()
        registry.stop()

    rcodec = Codec(InMemoryRegistry())
    replayed: list[tuple[bytes | None, bytes | None]] = []

    def sink(out: Outgoing) -> None:
        if out.topic == "household.bonus":
            replayed.append((out.key, out.value))

    driver = Driver(load_rules(), tmp_path / "replay", codec=rcodec, sink=sink)
    for e in a + b + c:
        driver.feed(*encode_event(rcodec, e))
    driver.close()
    expected = _final_tallies(rcodec, replayed)

    assert len(expected) > 100
    assert on_broker.keys() == expected.keys()
    wrong = {k: (on_broker[k], expected[k]) for k in expected if on_broker[k] != expected[k]}
    assert not wrong, f"{len(wrong)} household-months differ, e.g. {next(iter(wrong.items()))}"
