"""A stalled consumer group shows on /metrics, on /healthz and as a firing alert.

The stall is issue 16's own: on the embedded broker (noida-db never evicts a member that
died without leaving) a worker killed with ``kill -9`` and restarted as a *dynamic* member
(static membership off, as before the fix) joins the group again and again and never gets a
partition while the records pile up. Before this change /healthz said ok and /metrics had
no lag series at all. Now the worker must, within its ``stall_after_s`` (10 s here):

- export the group's lag per topic partition from the committed offsets, although it holds
  none of them, and ``purchase_stream_stalled{reason="no_assignment"} 1``;
- answer /healthz with 503 and the reason (no customer, card or household id in it);
- and a real Prometheus, scraping it with config/prometheus/alerts.yml loaded, fires
  ``PurchaseStreamWorkerStalled``.
"""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from stream.local.broker import EmbeddedBroker
from stream.local.registry_server import EmbeddedRegistryServer
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.simulator.config import SimConfig
from stream.simulator.generator import generate
from stream.tools.replay import encode_event
from tests.integration.prometheus_harness import PrometheusServer, require_binary
from tests.integration.worker_harness import WorkerProcess, phases, produce_events

STALL_AFTER_S = 10


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def _wait_for(what: str, probe: Callable[[], Any], timeout: float, worker: WorkerProcess) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker died ({worker.proc.returncode}):\n{worker.log_tail()}")
        try:
            last = probe()
        except OSError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(1)
    raise AssertionError(
        f"{what} not seen in {timeout:.0f} s (last: {last!r})\n{worker.log_tail()}"
    )


def test_a_stalled_group_shows_on_metrics_healthz_and_in_an_alert(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path
) -> None:
    prometheus = require_binary("prometheus", "prometheus")
    broker = broker_factory("stall", topics=True)
    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "schemas.json").start()
    codec = Codec(ConfluentRegistryClient(registry.url))
    now = int(time.time() * 1000)
    cfg = SimConfig(
        seed=161, households=40, receipts=400, start_ms=now - 600_000, receipts_per_second=2.0
    )
    register, receipts, _ = phases(list(generate(cfg)))
    group = f"stall-{uuid.uuid4().hex[:8]}"
    env = {
        "PURCHASE_STREAM_STATIC_MEMBERSHIP": "false",  # the behaviour before the fix
        "PURCHASE_STREAM_STALL_AFTER_S": str(STALL_AFTER_S),
        "PURCHASE_STREAM_BROKER_SESSION_TIMEOUT_S": "10",
    }
    first = WorkerProcess(broker.bootstrap, registry.url, tmp_path / "w", group, env).start()
    prom: PrometheusServer | None = None
    second: WorkerProcess | None = None
    try:
        produce_events(broker.bootstrap, codec, register + receipts[:100])
        first.wait_idle(timeout=240)
        base = f"http://127.0.0.1:{first.web_port}"
        status, body = _get(base + "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok", body

        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)
        produce_events(broker.bootstrap, codec, receipts[100:])
        second = WorkerProcess(broker.bootstrap, registry.url, tmp_path / "w", group, env)
        second.log_path = tmp_path / "w-restarted.log"
        second.start()
        base = f"http://127.0.0.1:{second.web_port}"
        prom = PrometheusServer(prometheus, tmp_path, [f"127.0.0.1:{second.web_port}"]).start()

        def metrics() -> str | None:
            status, text = _get(base + "/metrics")
            return text if 'purchase_stream_stalled{reason="no_assignment"} 1.0' in text else None

        text = _wait_for("purchase_stream_stalled 1", metrics, 180, second)
        lag: dict[tuple[str, int], float] = {}
        for line in text.splitlines():
            if line.startswith("purchase_stream_group_lag_records{"):
                topic = re.search(r'topic="([^"]+)"', line)
                partition = re.search(r'partition="(\d+)"', line)
                assert topic and partition, line
                lag[(topic[1], int(partition[1]))] = float(line.split()[-1])
        assert sum(v for (t, _p), v in lag.items() if t == "pos.receipts") > 0, lag
        assert {p for t, p in lag if t == "pos.receipts"} == {0, 1, 2, 3}
        # It holds nothing: the lag above comes from the group's committed offsets.
        assert 'purchase_stream_assigned_partitions{topic="pos.receipts"} 0.0' in text

        status, body = _get(base + "/healthz")
        assert status == 503, body
        answer = json.loads(body)
        assert answer["status"] == "stalled" and answer["stalled"] == "no_assignment"
        assert "holds no input partition" in answer["reason"]
        ids = {e["key"] for e in register if e["topic"] == "customer.cards"} | {
            v[f]
            for e in register
            if (v := e.get("value"))
            for f in ("customer_id", "household_id")
            if isinstance(v.get(f), str)
        }
        assert ids
        assert not [i for i in ids if i in body], "an id in the /healthz answer"

        def firing() -> list[Any] | None:
            q = prom.query('ALERTS{alertname="PurchaseStreamWorkerStalled",alertstate="firing"}')
            result = q.get("data", {}).get("result", [])
            return result or None

        # The rule's `for: 1m` after the first scrape that saw 1.
        [alert] = _wait_for("the firing alert", firing, 150, second)
        assert alert["metric"]["reason"] == "no_assignment"
        assert alert["metric"]["severity"] == "critical"
        log_text = second.log_path.read_text(errors="replace")
        assert "liveness: stalled (no_assignment)" in log_text
        assert not [i for i in ids if i in log_text], "an id in the worker's log"
    finally:
        if prom is not None:
            prom.stop()
        for w in (second, first):
            if w is not None and w.proc is not None:
                w.stop()
        registry.stop()


def test_a_partition_that_does_not_advance_shows_on_metrics_and_healthz(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path
) -> None:
    """The other kind of stall: a partition held, with lag, that commits nothing.

    A schema-registry outage blocks a partition by design (its records wait, nothing is
    lost): a receipt written with a schema id the worker has not seen cannot be decoded
    while the registry is down, so its partition stops where it is while records pile up
    behind it.
    """
    broker = broker_factory("stall-partition", topics=True)
    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "schemas.json").start()
    codec = Codec(ConfluentRegistryClient(registry.url))
    now = int(time.time() * 1000)
    cfg = SimConfig(
        seed=162, households=30, receipts=200, start_ms=now - 600_000, receipts_per_second=2.0
    )
    register, receipts, _ = phases(list(generate(cfg)))
    env = {
        "PURCHASE_STREAM_STALL_AFTER_S": str(STALL_AFTER_S),
        "PURCHASE_STREAM_BROKER_SESSION_TIMEOUT_S": "10",
    }
    group = f"stall-p-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(broker.bootstrap, registry.url, tmp_path / "w", group, env).start()
    try:
        produce_events(broker.bootstrap, codec, register + receipts[:50])
        worker.wait_idle(timeout=240)
        base = f"http://127.0.0.1:{worker.web_port}"
        assert _get(base + "/healthz")[0] == 200

        registry.stop()
        # A valid receipt whose header names a schema id nobody has registered: the worker
        # must ask the registry, which does not answer.
        topic, key, value, ts = encode_event(codec, receipts[50])
        assert topic == "pos.receipts" and value is not None
        unknown = value[:1] + (9_999).to_bytes(4, "big") + value[5:]
        producer = Producer(
            {"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random"}
        )
        producer.produce(topic, key=key, value=unknown, timestamp=ts)
        for e in receipts[51:]:
            topic, key, value, ts = encode_event(codec, e)
            producer.produce(topic, key=key, value=value, timestamp=ts)
        assert producer.flush(30) == 0

        def stalled() -> tuple[str, str] | None:
            status, body = _get(base + "/healthz")
            _, text = _get(base + "/metrics")
            if status == 503 and 'purchase_stream_stalled{reason="not_advancing"} 1.0' in text:
                return body, text
            return None

        body, text = _wait_for("a not_advancing stall", stalled, 120, worker)
        answer = json.loads(body)
        assert answer["stalled"] == "not_advancing"
        assert re.search(r"pos\.receipts\[\d\].* committed nothing for \d+ s", answer["reason"])
        # The worker holds its partitions: this is not the no-partition stall.
        assert 'purchase_stream_assigned_partitions{topic="pos.receipts"} 4.0' in text
        assert 'purchase_stream_stalled{reason="no_assignment"} 0.0' in text
    finally:
        # It exits with 75 (stopped during a registry outage with records unprocessed).
        worker.stop()
        registry.stop()
