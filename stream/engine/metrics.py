"""Business metrics in one object on an injected prometheus-client registry.

Label values come from bounded sets only (stream/engine/metric_labels.py), never a customer,
card or household id. Durations and ages are in seconds, sizes in bytes, as Prometheus
conventions ask; Faust's own ``faust_*`` metrics (milliseconds) share the registry.

Counters whose label values are known in advance are created at 0, so a dashboard panel
shows 0 rather than "no data" before the first event, and ``rate()`` sees the first one.
docs/architecture.md ("Metrics") lists every metric with its unit.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.engine.metric_labels import (
    API_BUCKETS_S,
    AUDIT_ACTIONS,
    AUDIT_OUTCOMES,
    AUDIT_TOPIC,
    COMMON_DLQ_REASONS,
    DECISIONS,
    E2E_BUCKETS_S,
    E2E_TOPICS,
    INPUT_TOPICS,
    LAG_BUCKETS_S,
    LATENCY_BUCKETS_S,
    OUTPUT_TOPICS,
    PURGE_STORES,
    PURPOSES,
    STAGES,
)
from topologies.records import StepResult


class _PendingFlusher:
    """A collector with no metrics of its own: collecting it applies Metrics' pending counts."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        self._metrics.flush()
        return []


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Per-record counter increments are summed here (a dict update) and applied to the
        # prometheus children by flush(): a prometheus-client inc() takes a lock and three calls,
        # ~1.5 us; a record makes about seven (benchmarks/results/2026-12-07-diary.md, section 3).
        # The flusher is registered before every metric, so any collect() -- a scrape, a test's
        # get_sample_value() -- applies the pending counts before reading a value.
        self._pending: dict[Any, float] = {}
        r.register(_PendingFlusher(self))

        # --- Flow ----------------------------------------------------------------------
        self.events_in = Counter(
            "purchase_stream_events_in_total",
            "Records consumed, per input topic",
            ["topic"],
            registry=r,
        )
        self.records_out = Counter(
            "purchase_stream_records_out_total",
            "Records produced, per output topic (tombstones included)",
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
        self.duplicates = Counter(
            "purchase_stream_duplicates_dropped_total",
            "Redelivered records recognised by receipt id and not counted again, per stage",
            ["stage"],
            registry=r,
        )
        self.processing_errors = Counter(
            "purchase_stream_processing_errors_total",
            "Unexpected exceptions while processing a record (the record is dead-lettered)",
            ["stage"],
            registry=r,
        )

        # --- Latency -------------------------------------------------------------------
        self.processing = Histogram(
            "purchase_stream_processing_seconds",
            "Time to process one record in a stage (decode, step, encode), seconds",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.event_time_lag = Histogram(
            "purchase_stream_receipt_event_time_lag_seconds",
            "Broker timestamp minus purchase time of receipts entering stage 1, seconds "
            "(how late the tills deliver)",
            buckets=LAG_BUCKETS_S,
            registry=r,
        )
        self.end_to_end = Histogram(
            "purchase_stream_end_to_end_latency_seconds",
            "Wall-clock time from purchase (purchased_at) to the output being handed to the "
            "producer, per output topic, seconds",
            ["topic"],
            buckets=E2E_BUCKETS_S,
            registry=r,
        )
        self.partition_event_time_lag = Gauge(
            "purchase_stream_partition_event_time_lag_seconds",
            "Wall clock minus the latest purchase time processed, per pos.receipts partition "
            "this worker owns, seconds (grows while a partition stalls)",
            ["partition"],
            registry=r,
        )
        self._receipt_watermark_ms: dict[int, int] = {}

        # --- Collected periodically from the worker's state and consumer ---------------
        self.parked = Gauge(
            "purchase_stream_parked_receipts",
            "Receipts waiting for their card, in the card_join partitions this worker owns",
            registry=r,
        )
        self.parked_max_age = Gauge(
            "purchase_stream_parked_receipt_max_age_seconds",
            "Age of the oldest parked receipt in the partitions this worker owns, seconds "
            "(processing clock; 0 when none is parked)",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "purchase_stream_consumer_lag_records",
            "Records not yet committed (end offset minus committed offset), per input "
            "topic partition this worker owns",
            ["topic", "partition"],
            registry=r,
        )
        self.group_lag = Gauge(
            "purchase_stream_group_lag_records",
            "Records the worker's consumer group has not committed (end offset minus the "
            "group's committed offset), per input topic partition, whether or not this "
            "worker holds it (every worker reports every partition: aggregate with max)",
            ["topic", "partition"],
            registry=r,
        )
        self.stalled = Gauge(
            "purchase_stream_stalled",
            "1 while this worker is stalled for longer than stall_after_s "
            "(stream/engine/liveness.py): "
            "no_assignment = holds no partition while its group has lag and commits nothing; "
            "not_advancing = a partition it holds has lag and commits nothing",
            ["reason"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "purchase_stream_assigned_partitions",
            "Input partitions assigned to this worker, per topic",
            ["topic"],
            registry=r,
        )
        self.table_keys = Gauge(
            "purchase_stream_table_keys",
            "Keys in a stage's state table (RocksDB estimate), active partitions of this worker",
            ["table"],
            registry=r,
        )
        self.table_disk_bytes = Gauge(
            "purchase_stream_rocksdb_disk_bytes",
            "On-disk size of a stage's RocksDB state on this worker (every partition "
            "database it holds, owned or restored at start), bytes",
            ["table"],
            registry=r,
        )
        self.collect_duration = Gauge(
            "purchase_stream_collector_duration_seconds",
            "How long the last periodic collection (lag, tables, parked receipts) took, seconds",
            registry=r,
        )
        self.collect_errors = Counter(
            "purchase_stream_collector_errors_total",
            "Periodic collections that failed (the previous values stay)",
            registry=r,
        )

        # --- Privacy -------------------------------------------------------------------
        self.purges = Counter(
            "purchase_stream_revocation_purges_total",
            "Stores deleted for a person after a consent revocation, per store",
            ["store"],
            registry=r,
        )
        self.erasures = Counter(
            "purchase_stream_erasures_total",
            "Customers erased (consent tombstone)",
            registry=r,
        )
        self.audit_records = Counter(
            "purchase_stream_audit_records_total",
            "Audit records written, per action and outcome",
            ["action", "outcome"],
            registry=r,
        )

        # --- Bonus and counters --------------------------------------------------------
        self.bonus_updates = Counter(
            "purchase_stream_bonus_tally_updates_total",
            "Receipts counted into a household's monthly Bonus tally",
            registry=r,
        )
        self.bonus_late = Counter(
            "purchase_stream_bonus_late_receipts_total",
            "Receipts counted into a month that was already closed",
            registry=r,
        )
        self.bonus_statements = Counter(
            "purchase_stream_bonus_statements_total",
            "Bonus statements emitted, per kind (statement at month close, correction)",
            ["kind"],
            registry=r,
        )
        self.bonus_months_closed = Counter(
            "purchase_stream_bonus_months_closed_total",
            "Household-months closed",
            registry=r,
        )
        self.bonus_dedupe = Gauge(
            "purchase_stream_bonus_dedupe_receipts",
            "Receipt ids the Bonus ledger keeps for dedupe, per state partition (bounded by "
            "the dedupe window)",
            ["partition"],
            registry=r,
        )
        # Stage state figures by the name a topologies.pipeline.StateGauge gives them.
        self.state_gauges = {"bonus_dedupe": self.bonus_dedupe}
        self.counters_updated = Counter(
            "purchase_stream_smobiili_updates_total",
            "S-mobiili counter updates",
            registry=r,
        )

        # --- API, audit, recall (called by the API layer) ------------------------------
        self.api_requests = Counter(
            "purchase_stream_api_requests_total",
            "API requests per route template and HTTP status",
            ["endpoint", "status"],
            registry=r,
        )
        self.api_latency = Histogram(
            "purchase_stream_api_request_duration_seconds",
            "API request duration per route template, seconds",
            ["endpoint"],
            buckets=API_BUCKETS_S,
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
        self._init_known_labels()
        # (stage, event) -> the dedicated counter child that event also increments.
        self._event_metric: dict[tuple[str, str], Any] = {
            ("household_bonus", "counted"): self.bonus_updates,
            ("household_bonus", "late_receipt"): self.bonus_late,
            ("household_bonus", "statement"): self.child(self.bonus_statements, "statement"),
            ("household_bonus", "correction"): self.child(self.bonus_statements, "correction"),
            ("household_bonus", "month_closed"): self.bonus_months_closed,
            ("personal_routing", "counters_updated"): self.counters_updated,
            ("personal_routing", "erasure"): self.erasures,
        }
        for store in PURGE_STORES:
            self._event_metric[("personal_routing", f"purge_{store}")] = self.child(
                self.purges, store
            )
        for stage in STAGES:
            self._event_metric[(stage, "duplicate")] = self.child(self.duplicates, stage)

    def _init_known_labels(self) -> None:
        for topic in INPUT_TOPICS:
            self.child(self.events_in, topic)
        for topic in OUTPUT_TOPICS:
            self.child(self.records_out, topic)
        for topic in E2E_TOPICS:
            self.child(self.end_to_end, topic)
        for purpose in PURPOSES:
            for decision in DECISIONS:
                self.child(self.routed, purpose, decision)
        for stage in STAGES:
            self.child(self.duplicates, stage)
            self.child(self.processing_errors, stage)
            self.child(self.processing, stage)
            for reason in COMMON_DLQ_REASONS:
                self.child(self.dead_letters, stage, reason)
        self.child(self.dead_letters, "card_join", "card_unknown_timeout")
        for store in PURGE_STORES:
            self.child(self.purges, store)
        for kind in ("statement", "correction"):
            self.child(self.bonus_statements, kind)
        for action in AUDIT_ACTIONS:
            for outcome in AUDIT_OUTCOMES:
                self.child(self.audit_records, action, outcome)

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def inc(self, counter: Any, n: float = 1) -> None:
        """Add ``n`` to a counter (or labelled child) at the next flush()/collect()."""
        p = self._pending
        p[counter] = p.get(counter, 0) + n

    def flush(self) -> None:
        """Apply the pending increments of :meth:`inc` to the prometheus counters."""
        if self._pending:
            pending, self._pending = self._pending, {}
            for counter, n in pending.items():
                counter.inc(n)

    def observe(self, stage: str, result: StepResult) -> None:
        inc = self.inc
        for (purpose, decision), n in result.routed.items():
            if n:
                inc(self.child(self.routed, purpose, decision), n)
        for event, n in result.events.items():
            if not n:
                continue
            inc(self.child(self.stage_events, stage, event), n)
            dedicated = self._event_metric.get((stage, event))
            if dedicated is not None:
                inc(dedicated, n)
        if result.events.get("recall_run"):
            inc(self.recall_runs, result.events["recall_run"])
            inc(self.recall_notifications, result.events.get("recall_notifications", 0))
        # Audit records the topology writes (purges, erasures, recalls); the API layer
        # calls audit() itself for the records it writes.
        for e in result.emits:
            if e.topic == AUDIT_TOPIC and e.value is not None:
                self.audit(str(e.value["action"]), str(e.value["outcome"]))

    def audit(self, action: str, outcome: str) -> None:
        """One audit record written (the topology's purges and erasures, the API's reads)."""
        self.inc(self.child(self.audit_records, action, outcome))

    def end_to_end_latency(self, topic: str, purchased_at_ms: int, now_s: float) -> None:
        self.child(self.end_to_end, topic).observe(max(0.0, now_s - purchased_at_ms / 1000))

    def receipt_watermark(self, partition: int, purchased_at_ms: int) -> None:
        """Latest purchase time seen on a ``pos.receipts`` partition (event-time lag)."""
        held = self._receipt_watermark_ms.get(partition)
        if held is None or purchased_at_ms > held:
            self._receipt_watermark_ms[partition] = purchased_at_ms

    def refresh_event_time_lag(
        self, owned: set[int] | None = None, now_s: float | None = None
    ) -> None:
        """Set the per-partition event-time lag gauges; forget partitions no longer owned."""
        now = time.time() if now_s is None else now_s
        for partition in list(self._receipt_watermark_ms):
            if owned is not None and partition not in owned:
                del self._receipt_watermark_ms[partition]
                with contextlib.suppress(KeyError):
                    self.partition_event_time_lag.remove(str(partition))
                continue
            lag = max(0.0, now - self._receipt_watermark_ms[partition] / 1000)
            self.partition_event_time_lag.labels(str(partition)).set(lag)
