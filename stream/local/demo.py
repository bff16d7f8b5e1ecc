"""``purchase-stream demo``: embedded broker, schema registry, topics, worker and POS simulator.

Everything runs locally with nothing installed but the Python packages: noida-db as the
Kafka-protocol broker, the embedded schema registry, one Faust worker (a child process, as
in production) and the simulator producing at ``--rate`` receipts/s. A live summary reads
the worker's own ``/metrics`` page and the consumer lag, every two seconds. Ctrl-C (or
``--duration``) stops the producer, then the worker (SIGTERM: Faust commits and flushes),
then the registry and the broker (SIGINT: it saves its data), and exits 0.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from stream.settings import Settings


def scrape(url: str, timeout: float = 1.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a Prometheus text page: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URL
        text = resp.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _sum(samples: dict[Any, float], name: str, **match: str) -> float:
    total = 0.0
    for (n, labels), v in samples.items():
        if n != name:
            continue
        ld = dict(labels)
        if all(ld.get(k) == val for k, val in match.items()):
            total += v
    return total


# The purposes a line item is routed to (purchase_stream_line_items_routed_total{purpose}).
PURPOSES = ("personal", "marketing", "ereceipt", "recall")


def routing_summary(samples: dict[Any, float]) -> tuple[int, dict[str, int]]:
    """``(line items, {purpose: line items it received})`` from the worker's metrics.

    Every line item is decided once for each purpose (allowed, or withheld with a reason), so
    the decisions of one purpose count the line items; summing the withheld decisions of all
    four would count each line item up to four times.
    """
    metric = "purchase_stream_line_items_routed_total"
    line_items = int(_sum(samples, metric, purpose="personal"))
    allowed = {p: int(_sum(samples, metric, purpose=p, decision="allowed")) for p in PURPOSES}
    return line_items, allowed


class _Stoppable:
    def __init__(self) -> None:
        self.event = threading.Event()

    def wrap(self, events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for e in events:
            if self.event.is_set():
                return
            yield e


def run_demo(
    settings: Settings,
    *,
    duration: float | None,
    rate: float,
    households: int,
    receipts: int,
    seed: int,
    keep: bool = False,
) -> int:
    from stream.local.broker import EmbeddedBroker
    from stream.local.offsets import group_lag
    from stream.local.provision import create_local_topics
    from stream.local.reachability import free_port
    from stream.local.registry_server import EmbeddedRegistryServer
    from stream.serde.codec import Codec
    from stream.serde.registry_client import ConfluentRegistryClient
    from stream.serve import auth
    from stream.simulator.config import SimConfig
    from stream.simulator.generator import generate
    from stream.simulator.pos import produce

    root = Path(tempfile.mkdtemp(prefix="purchase-stream-demo-"))
    say = _printer()
    say(f"demo data in {root}")
    broker = EmbeddedBroker(root / "broker")
    registry = EmbeddedRegistryServer("127.0.0.1", 0, root / "schemas.json")
    worker: subprocess.Popen[bytes] | None = None
    producer: threading.Thread | None = None
    stopper = _Stoppable()
    stop_requested = threading.Event()

    def on_signal(_sig: int, _frame: Any) -> None:
        stop_requested.set()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    stats: dict[str, Any] = {}
    try:
        broker.start()
        say(f"broker   noida-db on {broker.bootstrap}")
        registry.start()
        say(f"registry {registry.url}")
        # Bounded local retention (stream/local/topics.py): an hour of demo stays small.
        create_local_topics(broker.bootstrap, settings)
        say(f"topics   created ({settings.partitions} partitions each)")
        web_port = free_port()
        env = {
            **os.environ,
            "PURCHASE_STREAM_BROKER": broker.bootstrap,
            "PURCHASE_STREAM_SCHEMA_REGISTRY_URL": registry.url,
            "PURCHASE_STREAM_STATE_DIR": str(root / "worker-state"),
            "PURCHASE_STREAM_WEB_PORT": str(web_port),
            "PURCHASE_STREAM_PARTITIONS": str(settings.partitions),
            "PURCHASE_STREAM_APP_ID": settings.app_id,
            # A key for this run only, so the demo can hand out a token for the page.
            "PURCHASE_STREAM_API_JWT_SECRET": settings.api_jwt_secret.get_secret_value()
            or secrets.token_hex(32),
        }
        log = open(root / "worker.log", "wb")  # noqa: SIM115 - lives as long as the worker
        worker = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        say(
            f"worker   pid {worker.pid}, metrics http://127.0.0.1:{web_port}/metrics, "
            f"log {root / 'worker.log'}"
        )
        # Live: the simulated clock starts now and runs at the production rate, so broker
        # timestamps are current (old ones would fall outside the topics' retention).
        cfg = SimConfig(
            seed=seed,
            households=households,
            receipts=receipts,
            start_ms=int(time.time() * 1000),
            receipts_per_second=rate,
        )
        codec = Codec(ConfluentRegistryClient(registry.url))

        viewer: dict[str, Any] = {}

        def run_producer() -> None:
            stats.update(
                produce(
                    stopper.wrap(_tap_viewer(generate(cfg), viewer)),
                    bootstrap=broker.bootstrap,
                    codec=codec,
                    rate=rate,
                    progress=False,
                )
            )

        producer = threading.Thread(target=run_producer, name="pos", daemon=True)
        producer.start()
        say(
            f"pos      simulator producing {rate:g} receipts/s "
            f"({households} households); Ctrl-C stops"
        )
        started = time.monotonic()
        metrics_url = f"http://127.0.0.1:{web_port}/metrics"
        shown_page = False
        shown_legend = False
        prev_in, prev_t = 0.0, started
        while not stop_requested.is_set():
            if duration is not None and time.monotonic() - started >= duration:
                break
            if not shown_page and viewer.get("ready"):
                shown_page = True
                tok = auth.issue(
                    env["PURCHASE_STREAM_API_JWT_SECRET"],
                    viewer["customer_id"],
                    ttl_s=24 * 3600,
                )
                say(
                    "page     a simulated member's live S-mobiili counters: "
                    f"http://127.0.0.1:{web_port}/app/#token={tok}"
                )
            if worker.poll() is not None:
                say(f"worker exited with {worker.returncode}; see {root / 'worker.log'}")
                return 1
            stop_requested.wait(2.0)
            try:
                samples = scrape(metrics_url)
            except OSError:
                say("waiting for the worker to start ...")
                continue
            now = time.monotonic()
            receipts_in = _sum(samples, "purchase_stream_events_in_total", topic="pos.receipts")
            rate_now = (receipts_in - prev_in) / max(now - prev_t, 1e-6)
            prev_in, prev_t = receipts_in, now
            try:
                # What the worker's group has left (the catalogue is read outside it).
                lag_total = group_lag(broker.bootstrap, settings.app_id, timeout=2)
            except Exception:  # noqa: BLE001 - the summary must not kill the demo
                lag_total = -1
            line_items, allowed = routing_summary(samples)
            if not shown_legend:
                shown_legend = True
                say(
                    "columns  line items: line items received; to <purpose>: how many of them "
                    "that purpose received (each purpose decides every line item: by the consent "
                    "flag it needs, recall by law; the rest are withheld from it)"
                )
            say(
                f"t={now - started:5.0f}s receipts in {int(receipts_in):>7} ({rate_now:5.0f}/s) | "
                f"line items {line_items:>8}: to personal {allowed['personal']:>7} "
                f"marketing {allowed['marketing']:>7} e-receipt {allowed['ereceipt']:>7} "
                f"recall {allowed['recall']:>7} | dead letters "
                f"{int(_sum(samples, 'purchase_stream_dead_letters_total')):>4} | lag {lag_total}"
            )
        return 0
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        say("stopping: producer")
        stopper.event.set()
        if producer is not None:
            producer.join(timeout=30)
        if worker is not None and worker.poll() is None:
            say("stopping: worker")
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        say("stopping: registry, broker")
        registry.stop()
        broker.stop()
        if stats:
            say(f"produced {stats}")
        if keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        say("stopped cleanly")


def _tap_viewer(
    events: Iterator[dict[str, Any]], found: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Pass events through; remember a member who allows product-level services (and so has
    counters) for the demo's page link."""
    cards: dict[str, dict[str, Any]] = {}
    for e in events:
        if not found.get("ready"):
            v = e.get("value")
            if e["topic"] == "customer.cards" and v is not None:
                cards[v["customer_id"]] = v
            elif (
                e["topic"] == "customer.consents"
                and v is not None
                and v.get("product_level_services")
                and v["customer_id"] in cards
            ):
                card = cards[v["customer_id"]]
                found.update(
                    customer_id=v["customer_id"],
                    household_id=card["household_id"],
                    hh_role="main" if card["role"] == "MAIN_MEMBER" else "member",
                    ready=True,
                )
        yield e


def _printer() -> Any:
    def say(msg: str) -> None:
        try:
            print(msg, flush=True)
        except BrokenPipeError:
            # stdout went away (`demo | head`): stop cleanly instead of dying and leaving
            # the worker and broker running.
            os.kill(os.getpid(), signal.SIGTERM)

    return say
