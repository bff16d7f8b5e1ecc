"""The dashboards and alerts work against what a real worker really exports.

A worker runs on its own embedded broker under the POS simulator's live load (plus a few
undecodable records, and API requests with a JWT and without); a real Prometheus (the Debian
package) scrapes its ``/metrics`` every second and loads ``config/prometheus/alerts.yml``.
Then every query of every Grafana dashboard panel must be valid *and return data*, and
every alert expression must be valid and evaluate without error inside Prometheus.

Set ``PURCHASE_STREAM_OVERVIEW_PNG=docs/img/pipeline-overview.png`` (and optionally
``PURCHASE_STREAM_OVERVIEW_SECONDS=240`` for a longer run) to render the picture of the
pipeline overview in docs/architecture.md from this run's series.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.local.broker import EmbeddedBroker
from stream.local.registry_server import EmbeddedRegistryServer
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.serve.auth import issue
from stream.simulator.config import SimConfig
from stream.simulator.generator import generate
from stream.simulator.pos import produce
from tests.integration.prometheus_harness import (
    DASHBOARDS,
    PanelQuery,
    PrometheusServer,
    as_grafana_would,
    panel_queries,
    render_dashboard,
    require_binary,
    rule_expressions,
)
from tests.integration.worker_harness import WorkerProcess

JWT_SECRET = "observability-test-secret-of-32-bytes+"
RATE = 40.0  # receipts/s: well within what one worker sustains on 2 busy cores
# Dead letters from the start (the simulator's own broken receipts are rare).
BAD_BYTES = [
    ("pos.receipts", b"garbage-obs-1", b"\x13\x37 not avro"),
    ("pos.receipts", b"garbage-obs-2", b"\x00\x00\x00\x27\x0f\x02"),
]


def _api(port: int, path: str, token: str | None) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _problems(prom: PrometheusServer, queries: list[PanelQuery]) -> list[str]:
    out = []
    for q in queries:
        answer = prom.query(as_grafana_would(q.expr))
        if answer.get("status") != "success":
            out.append(f"{q.dashboard} / {q.panel}: {answer.get('error')} in {q.expr}")
        elif not answer["data"]["result"]:
            out.append(f"{q.dashboard} / {q.panel}: no data for {q.expr}")
    return out


def test_dashboards_and_alerts_on_real_prometheus(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path
) -> None:
    prometheus = require_binary("prometheus", "prometheus")
    started = time.monotonic()
    own_broker = broker_factory("obs", topics=True)
    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "schemas.json").start()
    worker = WorkerProcess(
        own_broker.bootstrap,
        registry.url,
        tmp_path / "worker",
        app_id=f"obs-{uuid.uuid4().hex[:8]}",
        extra_env={"PURCHASE_STREAM_API_JWT_SECRET": JWT_SECRET},
    ).start()
    prom = PrometheusServer(prometheus, tmp_path, [f"127.0.0.1:{worker.web_port}"])
    stop = threading.Event()
    stats: dict[str, Any] = {}
    # Live: purchase times are now, at the production pace (end-to-end latency is real).
    cfg = SimConfig(
        seed=11,
        households=600,
        receipts=1_000_000,
        start_ms=int(time.time() * 1000),
        receipts_per_second=RATE,
        # more of what the privacy and Bonus panels show, in a short run
        consent_changes=0.05,
    )

    def events() -> Any:
        for e in generate(cfg):
            if stop.is_set():
                return
            yield e

    def run_pos() -> None:
        stats.update(
            produce(
                events(),
                bootstrap=own_broker.bootstrap,
                codec=Codec(ConfluentRegistryClient(registry.url)),
                rate=RATE,
                bad_bytes=BAD_BYTES,
            )
        )

    pos = threading.Thread(target=run_pos, name="pos", daemon=True)
    try:
        prom.start()
        pos.start()
        worker.wait_processing(timeout=120)
        token = issue(JWT_SECRET, "C-OBS-1")
        counters = "/v1/me/counters/2026-01"
        statuses = [_api(worker.web_port, counters, token), _api(worker.web_port, counters, None)]
        assert statuses[0] in (200, 404) and statuses[1] == 401, statuses

        queries = list(panel_queries())
        assert len(queries) >= 30, "the three dashboards lost their panels"
        # Wait until every panel has data (lag and state sizes are collected every 5 s,
        # rates need two scrapes), then keep the load on for the picture if asked.
        deadline = time.monotonic() + 90
        problems = _problems(prom, queries)
        while problems and time.monotonic() < deadline:
            time.sleep(2)
            problems = _problems(prom, queries)
        assert not problems, "\n".join(problems) + f"\n{worker.log_tail(20)}"

        # Every alert expression: valid PromQL over these series, and healthy as a rule
        # that Prometheus itself loaded and evaluated.
        alerts = list(rule_expressions())
        assert len(alerts) >= 7
        for name, expr, _rule in alerts:
            answer = prom.query(expr)
            assert answer.get("status") == "success", f"{name}: {answer.get('error')}"
        time.sleep(2)  # evaluation_interval 1 s: every rule has been evaluated at least once
        loaded = {r["name"]: r for r in prom.rules()}
        assert set(loaded) == {name for name, _e, _r in alerts}
        for name, rule in loaded.items():
            assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"

        png = os.environ.get("PURCHASE_STREAM_OVERVIEW_PNG")
        if png:
            run_for = float(os.environ.get("PURCHASE_STREAM_OVERVIEW_SECONDS", "0"))
            time.sleep(max(0.0, run_for - (time.monotonic() - started)))
            end = time.time()
            render_dashboard(
                prom,
                DASHBOARDS / "pipeline-overview.json",
                end - (time.monotonic() - started),
                end,
                Path(png),
            )
    finally:
        stop.set()
        pos.join(timeout=30)
        prom.stop()
        worker.stop()
        registry.stop()
    assert stats.get("delivery_errors", 0) == 0, stats
