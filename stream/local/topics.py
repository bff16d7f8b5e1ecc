"""The one topic registry: every topic's name, key, value encoding, partitioning and cleanup.

The worker, the POS producer, topic creation (``purchase-stream topics``), ``replay`` and
docker-compose all read this module, so a topic is described exactly once.

Value encodings:
- ``avro``: Confluent wire format (magic byte 0, 4-byte schema id, schemaless Avro body);
  the schema is ``avro/<namespace path>/<Name>.avsc`` named by ``schema``.
- ``json``: UTF-8 JSON; used only for internal repartition topics that no one outside the
  worker reads, because re-encoding Avro there would double the per-receipt CPU cost.
"""

from __future__ import annotations

from dataclasses import dataclass

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # what the key is (documentation + docs/architecture.md's topic table)
    encoding: str  # "avro" | "json"
    schema: str | None  # Avro full name, e.g. "fi.coop.purchase.Receipt"
    compacted: bool
    internal: bool  # written and read only by the worker
    description: str
    retention_ms: int | None = None  # None = broker default; -1 = forever
    # None = broker default (7 days). Set where a short retention must really apply: the
    # broker deletes whole segments only, and only closed ones.
    segment_ms: int | None = None
    # Internal JSON topics only: a record's value may be a JSON array of records of one key
    # (a pack, stream/engine/packing.py), each processed as if it had come alone.
    packed: bool = False

    @property
    def cleanup_policy(self) -> str:
        return "compact" if self.compacted else "delete"


NS = "fi.coop.purchase"


def _t(
    name: str,
    key: str,
    schema: str | None,
    description: str,
    *,
    compacted: bool = False,
    internal: bool = False,
    retention_days: int | None = None,
    segment_ms: int | None = None,
    packed: bool = False,
) -> TopicSpec:
    retention = (
        None if retention_days is None else (-1 if retention_days < 0 else retention_days * DAY_MS)
    )
    return TopicSpec(
        name=name,
        key=key,
        encoding="avro" if schema else "json",
        schema=f"{NS}.{schema}" if schema else None,
        compacted=compacted,
        internal=internal,
        description=description,
        retention_ms=retention,
        segment_ms=segment_ms,
        packed=packed,
    )


# fmt: off
_SPECS = [
    # inputs
    _t("pos.receipts", "card number, or store id when anonymous", "Receipt",
       "receipts from the POS gateways"),
    _t("customer.cards", "card number", "Card",
       "card register: card -> customer, household, role; null = card closed", compacted=True),
    _t("customer.consents", "customer id", "Consent",
       "each customer's consent flags, versioned; null = customer erased", compacted=True),
    _t("product.catalog", "GTIN", "Product",
       "product catalogue: food/vegetable flags, origin, weight, CO2e factor", compacted=True),
    # internal repartitions
    _t("receipts.identified", "customer id", None,
       "receipts joined with their card, repartitioned by customer for the consent join; "
       "a record carries one, or a pack of a batch's receipts to one partition",
       internal=True, retention_days=7, packed=True),
    # The register's propagations carry the broker time of their card record, which may be
    # older than any time retention (a backfilled register): kept, as Kafka Streams keeps
    # its repartition topics; they grow with card changes only.
    _t("register.people", "customer id", None,
       "the card register's periods of one card for one person (who may see what)",
       internal=True, retention_days=-1),
    _t("register.households", "household id", None,
       "the card register's periods of one card for one person in one household",
       internal=True, retention_days=-1),
    _t("aggregates.contributions", "store id", None,
       "anonymous per-receipt product-group contributions, repartitioned by store; "
       "a record carries one, or a pack of a batch's contributions to one partition",
       internal=True, retention_days=7, packed=True),
    # outputs
    _t("receipts.totals", "household id", "ReceiptTotal",
       "receipt-total records of identified receipts (feeds the household Bonus ledger)",
       retention_days=730),
    _t("personal.line_items", "customer id/receipt id", "PersonalLineItems",
       "product-level personal store; null = deleted (revocation, erasure)", compacted=True),
    _t("marketing.signals", "customer id/receipt id", "MarketingSignal",
       "product-group level signals per person; null = deleted", compacted=True),
    _t("ereceipts.archive", "customer id/receipt id", "EReceipt",
       "e-receipt archive for customers who opted in; null = deleted", compacted=True),
    _t("smobiili.counters", "customer id", "SmobiiliCounters",
       "S-mobiili counters per purchaser and Helsinki month (month in the value); "
       "removed=true = deleted (revocation, erasure)", retention_days=1,
       segment_ms=HOUR_MS),
    _t("aggregates.group", "store id|Helsinki date", "GroupAggregate",
       "store x day x product group totals, no person identifiers", compacted=True),
    _t("household.bonus", "household id|YYYY-MM", "BonusTally",
       "running household Bonus tally per Helsinki calendar month (provisional)",
       compacted=True),
    _t("bonus.statements", "household id|YYYY-MM|seq", "BonusStatement",
       "month statements (seq 0) and corrections (seq 1, 2, ...) for payout",
       compacted=True, retention_days=-1),
    _t("recall.requests", "recall id (one copy per partition)", "RecallRequest",
       "product recall runs; the personal-routing stage reads its recall index per partition",
       retention_days=30),
    _t("recall.notifications", "recall id/customer id", "RecallNotification",
       "customers who bought a recalled product in the window (whatever their consent)",
       retention_days=365),
    _t("audit.log", "none (append-only)", "AuditRecord",
       "append-only audit trail: purges, erasures, reads", retention_days=-1),
    _t("deadletters", "original key bytes", "DeadLetter",
       "records that could not be processed: raw bytes + stage + reason code",
       retention_days=30),
]
# fmt: on

TOPICS: dict[str, TopicSpec] = {s.name: s for s in _SPECS}

# --- Local retention (the embedded broker of `purchase-stream demo` / `broker` only) ------
# noida-db keeps every record in one JSON snapshot (a byte as a JSON number: ~3.5x the
# record size) that it rewrites after changes: a demo at 50 receipts/s grew it by ~75 MB a
# minute (302 MB after 4 minutes, measured), 2.4 GB after a long `pos --rate 200`, with
# restarts of 20 s and stops that outlasted any fixed timeout. The local broker therefore
# keeps only the last ``settings.local_retention_s`` of most topics: time retention on
# delete topics, "compact,delete" on the compacted outputs and the worker's changelogs
# (their keys are mostly per receipt, so compaction alone does not bound them). noida-db
# deletes only closed segments and never rolls a segment by itself before ``segment.ms``
# (measured: retention.ms alone deleted nothing), hence the short segments.
#
# Kept whole: the registers the worker reads from the start (cards, consents, catalogue:
# bounded by their key count, compacted), the register's propagations (their records carry
# the card record's time, which the simulator sets an hour back) and what is kept for ever
# (statements, audit log: small). The price, local only: a worker more than the retention
# behind loses records, and a table restored from a changelog gets only its last retention's
# writes. Production
# topics (docker-compose, real Kafka) keep the registry's settings above.
LOCAL_SEGMENT_MS = 60 * 1000
LOCAL_KEEP_WHOLE = frozenset(
    {
        "customer.cards",
        "customer.consents",
        "product.catalog",
        "register.people",
        "register.households",
        "bonus.statements",
        "audit.log",
    }
)

# Topics read together by one stage must have the same partition count (co-partitioning):
# pos.receipts + customer.cards (key: card number) and receipts.identified +
# customer.consents (key: customer id). The simplest safe rule: every topic this
# application creates gets the same partition count (settings.partitions).


def spec(name: str) -> TopicSpec:
    try:
        return TOPICS[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {sorted(TOPICS)}") from None
