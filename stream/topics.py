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

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # what the key is (documentation + README table)
    encoding: str  # "avro" | "json"
    schema: str | None  # Avro full name, e.g. "fi.coop.purchase.Receipt"
    compacted: bool
    internal: bool  # written and read only by the worker
    description: str
    retention_ms: int | None = None  # None = broker default; -1 = forever

    @property
    def cleanup_policy(self) -> str:
        return "compact" if self.compacted else "delete"


NS = "fi.coop.purchase"

_SPECS = [
    # --- inputs -----------------------------------------------------------------------
    TopicSpec(
        "pos.receipts",
        "card number, or store id when anonymous",
        "avro",
        f"{NS}.Receipt",
        False,
        False,
        "receipts from the POS gateways",
    ),
    TopicSpec(
        "customer.cards",
        "card number",
        "avro",
        f"{NS}.Card",
        True,
        False,
        "card register: card -> customer, household, role; null = card closed",
    ),
    TopicSpec(
        "customer.consents",
        "customer id",
        "avro",
        f"{NS}.Consent",
        True,
        False,
        "each customer's consent flags, versioned; null = customer erased",
    ),
    TopicSpec(
        "product.catalog",
        "GTIN",
        "avro",
        f"{NS}.Product",
        True,
        False,
        "product catalogue: food/vegetable flags, origin, weight, CO2e factor",
    ),
    # --- internal repartition ----------------------------------------------------------
    TopicSpec(
        "receipts.identified",
        "customer id",
        "json",
        None,
        False,
        True,
        "receipts joined with their card, repartitioned by customer for the consent join",
        retention_ms=7 * DAY_MS,
    ),
    TopicSpec(
        "aggregates.contributions",
        "store id",
        "json",
        None,
        False,
        True,
        "anonymous per-receipt product-group contributions, repartitioned by store",
        retention_ms=7 * DAY_MS,
    ),
    # --- outputs ----------------------------------------------------------------------
    TopicSpec(
        "receipts.totals",
        "household id",
        "avro",
        f"{NS}.ReceiptTotal",
        False,
        False,
        "receipt-total records of identified receipts (feeds the household Bonus ledger)",
        retention_ms=730 * DAY_MS,
    ),
    TopicSpec(
        "personal.line_items",
        "customer id/receipt id",
        "avro",
        f"{NS}.PersonalLineItems",
        True,
        False,
        "product-level personal store; null = deleted (revocation, erasure)",
    ),
    TopicSpec(
        "marketing.signals",
        "customer id/receipt id",
        "avro",
        f"{NS}.MarketingSignal",
        True,
        False,
        "product-group level signals per person; null = deleted",
    ),
    TopicSpec(
        "ereceipts.archive",
        "customer id/receipt id",
        "avro",
        f"{NS}.EReceipt",
        True,
        False,
        "e-receipt archive for customers who opted in; null = deleted",
    ),
    TopicSpec(
        "aggregates.group",
        "store id|Helsinki date",
        "avro",
        f"{NS}.GroupAggregate",
        True,
        False,
        "store x day x product group totals, no person identifiers",
    ),
    TopicSpec(
        "audit.log",
        "none (append-only)",
        "avro",
        f"{NS}.AuditRecord",
        False,
        False,
        "append-only audit trail: purges, erasures, reads",
        retention_ms=-1,
    ),
    TopicSpec(
        "deadletters",
        "original key bytes",
        "avro",
        f"{NS}.DeadLetter",
        False,
        False,
        "records that could not be processed: raw bytes + stage + reason code",
        retention_ms=30 * DAY_MS,
    ),
]

TOPICS: dict[str, TopicSpec] = {s.name: s for s in _SPECS}

# Topics read together by one stage must have the same partition count (co-partitioning):
# pos.receipts + customer.cards (key: card number) and receipts.identified +
# customer.consents (key: customer id). The simplest safe rule: every topic this
# application creates gets the same partition count (settings.partitions).


def spec(name: str) -> TopicSpec:
    try:
        return TOPICS[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {sorted(TOPICS)}") from None
