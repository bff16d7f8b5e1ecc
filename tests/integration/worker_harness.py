"""Test harness: a real worker process, the embedded schema registry, a confluent producer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from stream.local.offsets import group_lag
from stream.local.reachability import free_port
from stream.serde.codec import Codec
from stream.tools.replay import encode_event


def terminate(proc: subprocess.Popen[Any], timeout: float = 60) -> int:
    """SIGTERM ``proc`` and wait for it (SIGKILL after ``timeout`` s); its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class WorkerProcess:
    def __init__(
        self,
        bootstrap: str,
        registry_url: str,
        state_dir: Path,
        app_id: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.app_id = app_id
        self.web_port = free_port()
        self.log_path = state_dir.with_suffix(".log")
        self.env = {
            **os.environ,
            "PURCHASE_STREAM_BROKER": bootstrap,
            "PURCHASE_STREAM_SCHEMA_REGISTRY_URL": registry_url,
            "PURCHASE_STREAM_STATE_DIR": str(state_dir),
            "PURCHASE_STREAM_WEB_PORT": str(self.web_port),
            "PURCHASE_STREAM_APP_ID": app_id,
            # Long enough that a heartbeat delayed by a loaded 2-core CI machine does not
            # expire the member (each needless rebalance costs seconds); tests that kill
            # workers on purpose set it shorter.
            "PURCHASE_STREAM_BROKER_SESSION_TIMEOUT_S": "20",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return terminate(self.proc, timeout)

    def wait_processing(self, timeout: float = 120) -> float:
        """Wait until this worker has processed receipts (its own /metrics says so)."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker died ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                url = f"http://127.0.0.1:{self.web_port}/metrics"
                with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
                    text = resp.read().decode()
                prefix = 'purchase_stream_events_in_total{topic="pos.receipts"}'
                for line in text.splitlines():
                    if line.startswith(prefix) and float(line.split()[-1]) > 0:
                        return float(line.split()[-1])
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"worker processed nothing in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def wait_idle(self, timeout: float = 180, settle: float = 2.0) -> None:
        """Wait until the worker's group has committed everything on every stage input."""
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker died ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                total = group_lag(self.bootstrap, self.app_id, timeout=5)
            except Exception:  # noqa: BLE001 - group not there yet
                total = -1
            if total == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    return
            else:
                quiet_since = None
            time.sleep(0.5)
        raise AssertionError(f"worker did not catch up in {timeout}s:\n{self.log_tail()}")


def produce_events(
    bootstrap: str,
    codec: Codec,
    events: Iterable[dict[str, Any]],
) -> int:
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 5,
        }
    )
    n = 0
    for e in events:
        topic, key, value, ts = encode_event(codec, e)
        while True:
            try:
                p.produce(topic, key=key, value=value, timestamp=ts)
                break
            except BufferError:
                p.poll(0.1)
        n += 1
        p.poll(0)
    assert p.flush(30) == 0
    return n


def phases(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], ...]:
    """Split a simulated stream so that no change races a receipt it could affect.

    Kafka (and Faust) order records within a partition of one topic, not across topics: a
    card change may overtake receipts produced before it. A card's *first* registration
    cannot change the outcome (a receipt that comes first is parked and released), so it
    stays with the receipts; moves, closures and consent changes come after them.
    """
    first_receipt = next(i for i, e in enumerate(events) if e["topic"] == "pos.receipts")
    a = events[:first_receipt]
    known_cards = {e["key"] for e in a if e["topic"] == "customer.cards"}
    b: list[dict[str, Any]] = []
    c: list[dict[str, Any]] = []
    for e in events[first_receipt:]:
        if e["topic"] == "pos.receipts":
            b.append(e)
        elif e["topic"] == "customer.cards" and e["key"] not in known_cards:
            known_cards.add(e["key"])
            b.append(e)
        else:
            c.append(e)
    return a, b, c


def assigned(worker: WorkerProcess, topic: str = "pos.receipts") -> int:
    """Partitions of ``topic`` the worker reports as its own (/metrics), -1 if unreadable."""
    import urllib.request

    prefix = f'purchase_stream_assigned_partitions{{topic="{topic}"}}'
    try:
        url = f"http://127.0.0.1:{worker.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            for line in resp.read().decode().splitlines():
                if line.startswith(prefix):
                    return int(float(line.split()[-1]))
    except OSError:
        pass
    return -1


def wait_group_stable(workers: list[WorkerProcess], partitions: int, timeout: float = 120) -> None:
    """Wait until the workers share every partition between them, each owning some.

    Tests start all workers and wait for this *before* producing: a member joining while
    another commits makes that one's commit fail (IllegalGeneration), aiokafka then rejoins
    under a new member id, and noida-db, which never expires the old id, can keep the group
    rebalancing for minutes.
    """
    deadline = time.monotonic() + timeout
    stable = 0
    while time.monotonic() < deadline:
        for w in workers:
            assert w.proc is not None
            if w.proc.poll() is not None:
                raise AssertionError(f"worker died ({w.proc.returncode}):\n{w.log_tail()}")
        owned = [assigned(w) for w in workers]
        stable = stable + 1 if min(owned) > 0 and sum(owned) == partitions else 0
        if stable >= 7:  # the gauges refresh every 5 s: the same split for longer than that
            return
        time.sleep(1)
    raise AssertionError(f"group not stable in {timeout}s: {owned}")
