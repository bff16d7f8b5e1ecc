"""The bounded label values and the histogram buckets of the worker's metrics
(stream/engine/metrics.py): every label value comes from these sets, a route template, or a
partition number -- never a customer, card or household id.
"""

from __future__ import annotations

from stream.local.topics import TOPICS
from topologies.pipeline import STAGES as PIPELINE

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
LAG_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400)
# Purchase -> output: seconds when healthy, hours when a till uploads a day's receipts late.
E2E_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 21600, 86400)
API_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

STAGES = tuple(s.name for s in PIPELINE)
INPUT_TOPICS = tuple(dict.fromkeys(t for s in PIPELINE for t in s.inputs))
# Every topic a stage may write (the sources that only producers write are left out).
OUTPUT_TOPICS = tuple(
    t
    for t in TOPICS
    if t not in ("pos.receipts", "customer.cards", "customer.consents", "product.catalog")
)
AUDIT_TOPIC = "audit.log"
PURPOSES = ("personal", "marketing", "ereceipt", "recall")
DECISIONS = (
    "allowed",
    "consent_off",
    "consent_unknown",
    "consent_lapsed",
    "total_only_chain",
    "anonymous",
)
# Reason codes pre-created per stage (others appear when they first happen).
COMMON_DLQ_REASONS = ("undecodable", "schema_mismatch", "processing_error")
PURGE_STORES = ("personal", "marketing", "ereceipt")
AUDIT_ACTIONS = (
    "read_counters",
    "read_purchases",
    "read_extract",
    "recall",
    "revocation_purge",
    "erasure",
)
AUDIT_OUTCOMES = ("ok", "denied", "not_found")
# End-to-end latency is measured for these outputs (those that carry or follow one receipt).
E2E_TOPICS = frozenset(
    {
        "receipts.identified",
        "aggregates.contributions",
        "receipts.totals",
        "personal.line_items",
        "marketing.signals",
        "ereceipts.archive",
        "household.bonus",
    }
)
