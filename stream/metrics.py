"""Business metrics in one object on an injected prometheus-client registry.

Label values come from bounded sets only (topic names, stage names, purposes, decision and
reason codes); never a customer, card or household id. Durations are in seconds, as
Prometheus conventions ask.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from topologies.records import StepResult

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
LAG_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "purchase_stream_events_in_total",
            "Records consumed, per input topic",
            ["topic"],
            registry=r,
        )
        self.records_out = Counter(
            "purchase_stream_records_out_total",
            "Records produced, per output topic",
            ["topic"],
            registry=r,
        )
        self.routed = Counter(
            "purchase_stream_line_items_routed_total",
            "Line items per purpose and routing decision (allowed, consent_off, "
            "consent_unknown, consent_lapsed, total_only_chain, anonymous)",
            ["purpose", "decision"],
            registry=r,
        )
        self.dead_letters = Counter(
            "purchase_stream_dead_letters_total",
            "Dead letters per stage and reason code",
            ["stage", "reason"],
            registry=r,
        )
        self.stage_events = Counter(
            "purchase_stream_stage_events_total",
            "Stage events (duplicate, parked, released, identified, anonymous, purge_*, ...)",
            ["stage", "event"],
            registry=r,
        )
        self.processing = Histogram(
            "purchase_stream_processing_seconds",
            "Time to process one record in a stage",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.event_time_lag = Histogram(
            "purchase_stream_receipt_event_time_lag_seconds",
            "Processing clock minus purchase time of receipts entering stage 1",
            buckets=LAG_BUCKETS_S,
            registry=r,
        )
        self.parked = Gauge(
            "purchase_stream_parked_receipts",
            "Receipts waiting for their card, in the partitions this process owns",
            registry=r,
        )
        self.processing_errors = Counter(
            "purchase_stream_processing_errors_total",
            "Unexpected exceptions while processing a record (the record is dead-lettered)",
            ["stage"],
            registry=r,
        )

        self.bonus_dedupe = Gauge(
            "purchase_stream_bonus_dedupe_receipts",
            "Receipt ids the Bonus ledger keeps for dedupe, per state partition (bounded by "
            "the dedupe window)",
            ["partition"],
            registry=r,
        )
        self.api_requests = Counter(
            "purchase_stream_api_requests_total",
            "API requests served, per route template and HTTP status",
            ["endpoint", "status"],
            registry=r,
        )
        self.api_latency = Histogram(
            "purchase_stream_api_request_duration_seconds",
            "Time to answer an API request, per route template",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.audit_records = Counter(
            "purchase_stream_audit_records_total",
            "Audit records written, per action and outcome",
            ["action", "outcome"],
            registry=r,
        )
        self.recall_runs = Counter(
            "purchase_stream_recall_runs_total",
            "Recall runs (one per partition of a recall request)",
            registry=r,
        )
        self.recall_notifications = Counter(
            "purchase_stream_recall_notifications_total",
            "Customers found by recall runs",
            registry=r,
        )
        # labels() costs about a microsecond per call; per-record paths use cached children.
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def audit(self, action: str, outcome: str) -> None:
        self.child(self.audit_records, action, outcome).inc()

    def observe(self, stage: str, result: StepResult) -> None:
        for (purpose, decision), n in result.routed.items():
            if n:
                self.child(self.routed, purpose, decision).inc(n)
        for event, n in result.events.items():
            self.child(self.stage_events, stage, event).inc(n)
        if result.events.get("recall_run"):
            self.recall_runs.inc(result.events["recall_run"])
            self.recall_notifications.inc(result.events.get("recall_notifications", 0))
        for e in result.emits:
            if e.topic == "audit.log" and e.value is not None:
                self.audit(e.value["action"], e.value["outcome"])
        if stage == "card_join":
            delta = result.events.get("parked", 0) - result.events.get("released", 0)
            delta -= sum(1 for r in result.rejects if r.code == "card_unknown_timeout")
            if delta:
                self.parked.inc(delta)
