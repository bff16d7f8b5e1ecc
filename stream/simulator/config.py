"""What the simulator generates: the event shape, topic names, :class:`SimConfig` (the mix)
and :class:`SimStats` (what a run injected, with ids)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from topologies import consent

Event = dict[str, Any]


# 2026-11-02T08:00 Europe/Helsinki (EET, UTC+2) = 06:00Z: a Monday morning, fixed so that runs
# are reproducible and late receipts (up to 4 days) reach back into October (month boundary).
DEFAULT_START_MS = 1_793_599_200_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

RECEIPTS = "pos.receipts"
CARDS = "customer.cards"
CONSENTS = "customer.consents"
CATALOG = "product.catalog"

TOTAL_ONLY_CHAINS = ("HOTEL", "RESTAURANT", "PARTNER")
PAYMENT_METHODS = ("S_ETUKORTTI_PAYMENT", "OTHER_CARD", "CASH", "MOBILE", "GIFT_CARD")
# cumulative payment mix: the S-Etukortti payment function needs the card itself
_PAY_CARD = (0.35, 0.75, 0.85, 0.98, 1.0)
_PAY_ANONYMOUS = (0.0, 0.62, 0.84, 0.98, 1.0)
ORIGINS = ("FINNISH_RAW", "FINNISH_MADE", "FOREIGN", "UNKNOWN")
# How a bad receipt breaks the rules (every one still fits the Receipt schema):
#   total_mismatch    product-level receipt whose total_cents != sum(lines.amount_cents)
#   eligible_mismatch bonus_eligible_cents > total_cents
#   negative_sale     negative amounts and quantities without original_receipt_id
#   bad_gtin          one line's GTIN has a wrong check digit (sums are consistent)
BAD_KINDS = ("total_mismatch", "eligible_mismatch", "negative_sale", "bad_gtin")
# bad_gtin is opt-in: the receipt validation does not check GTIN check digits (the domain
# rules do not ask for it), so such a receipt is processed, not dead-lettered.
DEFAULT_BAD_KINDS = ("total_mismatch", "eligible_mismatch", "negative_sale")


# SimConfig fields that are fractions (a share field per consent flag, named like the flag)
_SHARES = (
    "no_consent", *consent.FLAGS, "anonymous", "returns", "late", "bad", "duplicates",
    "unknown_cards", "total_only_with_lines", "late_cards", "consent_changes", "stale_consents",
    "household_moves", "card_closures", "erasures", "uncatalogued_products", "role_changes",
    "unversioned_cards",
)  # fmt: skip


@dataclass
class SimConfig:
    """What to generate. Shares are fractions (0.25 = 25 %); see :data:`DEFAULT_MIX`."""

    seed: int = 1
    households: int = 20_000
    receipts: int = 100_000  # distinct receipts; re-deliveries (duplicates) come on top
    start_ms: int = DEFAULT_START_MS  # broker time of the first receipt
    receipts_per_second: float = 50.0  # event-time rate (mean; gaps are exponential)
    products: int = 3_000
    stores: int = 600
    # consent mix, per customer (the flags are drawn independently)
    no_consent: float = 0.05  # no consent record at all -> every flag off (fail closed)
    product_level_services: float = 0.60
    marketing_targeting: float = 0.30
    external_audiences: float = 0.15
    direct_marketing: float = 0.35
    e_receipts: float = 0.10
    # receipt mix, per receipt
    anonymous: float = 0.25
    returns: float = 0.02
    late: float = 0.01  # purchased_at 1 h .. 4 days before the broker timestamp
    bad: float = 0.002  # rule-breaking receipts, see BAD_KINDS and bad_kinds
    duplicates: float = 0.01  # the same receipt event delivered again later
    unknown_cards: float = 0.001  # share of card receipts whose card is never registered
    total_only_with_lines: float = 0.05  # total-only tills that send lines anyway
    # population changes
    late_cards: float = 0.005  # share of cards registered only after their first receipt
    consent_changes: float = 0.005  # consent changes per receipt
    stale_consents: float = 0.05  # share of consent changes that re-send an older version
    household_moves: float = 0.0001  # per receipt; at least one when > 0
    card_closures: float = 0.0001  # per receipt; at least one when > 0
    erasures: float = 0.00005  # per receipt; at least one when > 0
    role_changes: float = 0.0001  # main member handovers per receipt; at least one when > 0
    # card records sent by an older gateway, without effective_at and version (effective at
    # their broker timestamp, ordered by arrival)
    unversioned_cards: float = 0.1
    uncatalogued_products: float = 0.002  # products sold but never published in the catalogue
    bad_kinds: tuple[str, ...] = DEFAULT_BAD_KINDS  # which BAD_KINDS to inject

    def __post_init__(self) -> None:
        for name in _SHARES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"SimConfig.{name} must be a fraction in [0, 1], got {value}")
        if self.returns + self.late + self.bad > 1.0:
            raise ValueError("SimConfig: returns + late + bad must not exceed 1")
        if self.households < 1 or self.products < 10 or self.stores < 1 or self.receipts < 0:
            raise ValueError("SimConfig: need households >= 1, products >= 10, stores >= 1")
        if self.receipts_per_second <= 0:
            raise ValueError("SimConfig.receipts_per_second must be positive")
        unknown = set(self.bad_kinds) - set(BAD_KINDS)
        if unknown or (self.bad > 0 and not self.bad_kinds):
            raise ValueError(f"SimConfig.bad_kinds: unknown {sorted(unknown)}; known {BAD_KINDS}")


# The default mix, e.g. for a CLI's --help or a report.
DEFAULT_MIX: dict[str, float] = {name: getattr(SimConfig(), name) for name in _SHARES}


@dataclass
class SimStats:
    """What a run injected, with ids, so that tests and reports can tell the cases apart.

    Filled while :func:`generate` runs; complete once the iterator is exhausted.
    """

    products: int = 0
    uncatalogued_gtins: list[str] = field(default_factory=list)
    households: int = 0
    customers: int = 0
    cards: int = 0
    customers_without_consent: int = 0
    receipts: int = 0  # distinct receipts, duplicates excluded
    anonymous: int = 0
    total_only: int = 0
    total_only_with_lines: int = 0
    returns: list[str] = field(default_factory=list)  # receipt ids of returns
    late: list[str] = field(default_factory=list)  # receipt ids of late receipts
    bad: dict[str, str] = field(default_factory=dict)  # receipt id -> BAD_KINDS entry
    duplicates: list[str] = field(default_factory=list)  # receipt id of each re-delivery
    unknown_card_receipts: list[str] = field(default_factory=list)
    late_cards: list[str] = field(default_factory=list)  # card numbers registered late
    late_card_first_receipt: dict[str, str] = field(default_factory=dict)  # card -> receipt id
    consent_changes: int = 0  # new versions emitted mid-stream (stale re-sends excluded)
    consent_opt_ins: int = 0
    consent_revocations: int = 0
    product_level_revocations: list[str] = field(default_factory=list)  # customer ids
    stale_consents: list[tuple[str, int]] = field(default_factory=list)  # (customer, version)
    household_moves: list[tuple[str, str, str]] = field(default_factory=list)  # (cust, old, new)
    closed_cards: list[str] = field(default_factory=list)
    role_changes: list[tuple[str, str, str]] = field(default_factory=list)  # (hh, old, new main)
    erased_customers: list[str] = field(default_factory=list)
    events_by_topic: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> int:
        return sum(self.events_by_topic.values())
