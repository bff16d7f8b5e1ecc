"""Business metrics: bounded labels, event mapping, and dashboards/alerts that refer only to
metrics the worker exports (the integration test then runs them on a real Prometheus)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from stream.engine.metrics import Metrics
from stream.engine.observability import add_process_metrics
from stream.engine.runner import RawRecord, Runner, purchase_time_ms
from stream.serde.codec import Codec
from stream.serde.registry_store import InMemoryRegistry
from stream.settings import load_rules
from topologies.pipeline import Stage
from topologies.records import Emit, StepResult

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "config" / "grafana" / "dashboards").glob("*.json"))
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
# Every label name the project's registry may use: all take values from bounded sets.
BOUNDED_LABELS = {
    "topic",
    "purpose",
    "decision",
    "stage",
    "reason",
    "event",
    "partition",
    "table",
    "endpoint",
    "status",
    "action",
    "outcome",
    "store",
    "kind",
    "version",
    "le",
}


def _registry() -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    m = Metrics(registry)
    add_process_metrics(registry)
    return m, registry


def _exported_names() -> set[str]:
    """Every sample name the worker can export: ours, process_*, Faust's sensor, up."""
    from faust.sensors.prometheus import FaustMetrics

    m, registry = _registry()
    m.child(m.bonus_dedupe, "0").set(1)
    m.consumer_lag.labels("pos.receipts", "0").set(1)
    m.assigned_partitions.labels("pos.receipts").set(1)
    m.table_keys.labels("card_join-store").set(1)
    m.table_disk_bytes.labels("card_join-store").set(1)
    m.receipt_watermark(0, 1)
    m.refresh_event_time_lag()
    FaustMetrics.create(registry, "faust")
    names = {s.name for fam in registry.collect() for s in fam.samples}
    # Faust's label-less families have no sample until first used: add their names.
    names |= {fam.name for fam in registry.collect()}
    names |= {f"{n}_total" for n in list(names)} | {f"{n}_bucket" for n in list(names)}
    names |= {f"{n}_count" for n in list(names)} | {f"{n}_sum" for n in list(names)}
    return names | {"up"}


def test_labels_are_bounded_and_never_ids() -> None:
    m, registry = _registry()
    m.child(m.api_requests, "/v1/households/{household_id}/bonus/{month}", "200")
    for fam in registry.collect():
        for sample in fam.samples:
            assert set(sample.labels) <= BOUNDED_LABELS, (fam.name, sample.labels)
    text = generate_latest(registry).decode()
    assert "customer" not in text.replace("customer.cards", "").replace("customer.consents", "")
    assert "household_id=" not in text and "card_number" not in text


def test_known_series_start_at_zero() -> None:
    m, registry = _registry()
    text = generate_latest(registry).decode()
    for line in (
        'purchase_stream_line_items_routed_total{decision="consent_off",purpose="personal"} 0.0',
        'purchase_stream_audit_records_total{action="read_counters",outcome="denied"} 0.0',
        'purchase_stream_revocation_purges_total{store="marketing"} 0.0',
        'purchase_stream_duplicates_dropped_total{stage="household_bonus"} 0.0',
        "purchase_stream_smobiili_updates_total 0.0",
        "purchase_stream_recall_runs_total 0.0",
        "purchase_stream_recall_notifications_total 0.0",
    ):
        assert line in text


def test_stage_events_feed_dedicated_metrics() -> None:
    m, registry = _registry()
    bonus = StepResult()
    bonus.events.update(
        {"counted": 3, "late_receipt": 1, "statement": 2, "correction": 1, "duplicate": 4}
    )
    bonus.events["month_closed"] += 2
    m.observe("household_bonus", bonus)
    routing = StepResult()
    routing.events.update({"counters_updated": 5, "purge_marketing": 1, "erasure": 1})
    routing.events["duplicate"] += 1
    m.observe("personal_routing", routing)

    def value(name: str, **labels: str) -> float:
        v = registry.get_sample_value(name, labels)
        assert v is not None, (name, labels)
        return v

    assert value("purchase_stream_bonus_tally_updates_total") == 3
    assert value("purchase_stream_bonus_late_receipts_total") == 1
    assert value("purchase_stream_bonus_statements_total", kind="statement") == 2
    assert value("purchase_stream_bonus_statements_total", kind="correction") == 1
    assert value("purchase_stream_bonus_months_closed_total") == 2
    assert value("purchase_stream_duplicates_dropped_total", stage="household_bonus") == 4
    assert value("purchase_stream_duplicates_dropped_total", stage="personal_routing") == 1
    assert value("purchase_stream_smobiili_updates_total") == 5
    assert value("purchase_stream_revocation_purges_total", store="marketing") == 1
    assert value("purchase_stream_erasures_total") == 1
    # The generic per-stage count stays.
    assert (
        value("purchase_stream_stage_events_total", stage="household_bonus", event="counted") == 3
    )


def test_runner_counts_audit_records_and_end_to_end_latency() -> None:
    purchased = 1_767_225_600_000  # 2026-01-01T00:00Z
    audit = {
        "at": purchased,
        "actor": "purchase-stream",
        "action": "revocation_purge",
        "subject_customer_id": "C-1",
        "purpose": "marketing_targeting",
        "outcome": "ok",
        "detail": "{}",
    }
    identified = {"receipt": {"receipt_id": "R-1", "purchased_at": purchased}, "card": {}}

    def step(*_args: Any) -> StepResult:
        return StepResult(
            emits=[
                Emit("audit.log", None, audit),
                Emit("receipts.identified", "C-1", identified),
                Emit("receipts.identified", "C-2", None),  # a tombstone: no latency
            ]
        )

    m, registry = _registry()
    runner = Runner(Codec(InMemoryRegistry()), load_rules(), m, wall_clock=lambda: 1_767_225_607)
    stage = Stage("card_join", ("customer.cards",), step)
    runner.process(stage, None, RawRecord("customer.cards", 0, 0, purchased, b"k", None))  # type: ignore[arg-type]

    labels = {"action": "revocation_purge", "outcome": "ok"}
    assert registry.get_sample_value("purchase_stream_audit_records_total", labels) == 1
    e2e = "purchase_stream_end_to_end_latency_seconds"
    assert registry.get_sample_value(f"{e2e}_count", {"topic": "receipts.identified"}) == 1
    assert registry.get_sample_value(f"{e2e}_sum", {"topic": "receipts.identified"}) == 7.0


def test_purchase_time_of_records() -> None:
    assert purchase_time_ms({"purchased_at": 5}) == 5
    assert purchase_time_ms({"receipt": {"purchased_at": 6}}) == 6
    assert purchase_time_ms({"household_id": "H"}) is None
    assert purchase_time_ms(None) is None


def test_event_time_lag_forgets_partitions_no_longer_owned() -> None:
    m, registry = _registry()
    m.receipt_watermark(0, 1_000_000)
    m.receipt_watermark(0, 999_000)  # older: the watermark does not go back
    m.receipt_watermark(1, 1_000_000)
    m.refresh_event_time_lag(owned={0, 1}, now_s=1_010)
    name = "purchase_stream_partition_event_time_lag_seconds"
    assert registry.get_sample_value(name, {"partition": "0"}) == 10
    m.refresh_event_time_lag(owned={0}, now_s=1_020)
    assert registry.get_sample_value(name, {"partition": "0"}) == 20
    assert registry.get_sample_value(name, {"partition": "1"}) is None


def test_dashboard_panels_have_title_unit_and_exported_metrics() -> None:
    assert {p.name for p in DASHBOARDS} == {
        "pipeline-overview.json",
        "privacy-routing.json",
        "bonus-counters.json",
    }
    exported = _exported_names()
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        assert dash["uid"] and dash["title"]
        for panel in dash["panels"]:
            where = f"{path.name} / {panel.get('title')}"
            assert panel.get("title"), where
            assert panel["fieldConfig"]["defaults"].get("unit"), where
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, where
            assert panel["targets"], where
            for target in panel["targets"]:
                expr = target["expr"]
                names = set(re.findall(r"\b(?:purchase_stream|faust|process)_[a-z_]+", expr))
                names |= {"up"} if re.search(r"\bup\{", expr) else set()
                assert names, where
                assert names <= exported, (where, names - exported)


def test_alert_rules_have_severity_runbook_and_exported_metrics() -> None:
    exported = _exported_names()
    runbook = RUNBOOK.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", runbook, flags=re.M)
    }
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "PurchaseStreamWorkerDown",
        "PurchaseStreamNoReceipts",
        "PurchaseStreamConsumerLagGrowing",
        "PurchaseStreamDeadLetterRate",
        "PurchaseStreamParkedReceiptsTooOld",
        "PurchaseStreamEndToEndLatencyHigh",
        "PurchaseStreamRebalanceStorm",
    }
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"], name
        url = rule["annotations"]["runbook_url"]
        # Absolute from the base Prometheus is configured with (config/prometheus/prometheus.yml).
        assert url == "{{ $externalLabels.runbook_base }}#" + name.lower(), name
        assert name.lower() in anchors, f"docs/runbook.md has no section {name}"
        names = set(re.findall(r"\b(?:purchase_stream|faust|process)_[a-z_]+", rule["expr"]))
        assert names <= exported, (name, names - exported)


def test_a_stages_state_gauge_is_read_after_the_events_that_change_it() -> None:
    # topologies.pipeline.Stage.gauge: the runner sets the Bonus dedupe size per partition
    # after counted receipts, with no knowledge of the stage itself.
    import contextlib

    from stream.simulator.config import SimConfig
    from stream.simulator.generator import generate
    from stream.tools.replay import Driver, encode_event
    from topologies import household_bonus

    m, registry = _registry()
    driver = Driver(load_rules(), metrics=m)
    for event in generate(SimConfig(seed=3, households=20, receipts=60, products=50)):
        with contextlib.suppress(ValueError):  # the simulator's deliberately broken lines
            driver.feed(*encode_event(driver.codec, event))
    seen = household_bonus.seen_count(driver.states[household_bonus.STAGE])
    assert seen > 0
    samples = [
        s.value
        for metric in registry.collect()
        if metric.name == "purchase_stream_bonus_dedupe_receipts"
        for s in metric.samples
    ]
    assert samples and max(samples) == seen
