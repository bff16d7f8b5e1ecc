"""The shapes of the records the topologies read and write, as :class:`typing.TypedDict`.

Records are plain dicts with the Avro field names (timestamps as UTC epoch millis, money as
integer cents). There is one class per Avro record of ``avro/`` (the schemas of every
non-internal topic; tests/unit/test_tooling.py keeps them in step) and one per internal topic
(``receipts.identified``, ``aggregates.contributions``, ``register.people``,
``register.households``); the values a stage keeps in its state are typed next to the code
that keeps them. They are types only: at run time a record is the dict the codec decoded,
with no conversion and no check.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

# --- Avro records (avro/fi/coop/purchase/*.avsc) -----------------------------------------------


class Line(TypedDict):
    """A receipt line (``Receipt.lines``)."""

    line_no: int
    gtin: str
    unit: str  # PCS or KG
    quantity_milli: int
    amount_cents: int
    bonus_eligible: bool


class Receipt(TypedDict):
    """``pos.receipts``: a receipt from a till (``card_number`` None: anonymous)."""

    receipt_id: str
    store_id: str
    chain: str
    card_number: str | None
    purchased_at: int
    total_cents: int
    bonus_eligible_cents: int
    payment_method: str
    original_receipt_id: NotRequired[str | None]
    lines: list[Line]


class Card(TypedDict):
    """``customer.cards``: a card's link to a person and a household."""

    card_number: str
    customer_id: str
    household_id: str
    role: str  # MAIN_MEMBER or MEMBER
    effective_at: NotRequired[int | None]
    version: NotRequired[int | None]


class Consent(TypedDict):
    """``customer.consents``: a versioned consent record (flags: topologies/consent.py)."""

    customer_id: str
    version: int
    effective_at: int
    product_level_services: bool
    marketing_targeting: bool
    external_audiences: bool
    direct_marketing: bool
    e_receipts: bool
    source: NotRequired[str]


class Product(TypedDict):
    """``product.catalog``: a catalogue entry."""

    gtin: str
    name: str
    product_group: str
    food: bool
    vegetable: bool
    origin: str
    net_weight_grams: NotRequired[int | None]
    co2e_kg_per_kg: NotRequired[float | None]


class RecallRequest(TypedDict):
    """``recall.requests``: a product recall run."""

    recall_id: str
    gtin: str
    from_date: str
    to_date: str
    reason: str
    requested_by: str
    requested_at: int


class RecalledPurchase(TypedDict):
    """A purchase of a recalled product (``RecallNotification.receipts``)."""

    receipt_id: str
    purchased_at: int


class RecallNotification(TypedDict):
    """``recall.notifications``: who bought a recalled product."""

    recall_id: str
    gtin: str
    customer_id: str
    card_numbers: list[str]
    receipts: list[RecalledPurchase]
    reason: str
    requested_at: int


class ReceiptTotal(TypedDict):
    """``receipts.totals``: a receipt at total level with its card's link, keyed by household."""

    receipt_id: str
    card_number: str
    customer_id: str
    household_id: str
    role: str
    store_id: str
    chain: str
    purchased_at: int
    total_cents: int
    bonus_eligible_cents: int
    payment_method: str
    original_receipt_id: str | None


class PersonalLine(Line):
    """A line of the product-level personal store, with its product group."""

    product_group: str | None


class PersonalLineItems(TypedDict):
    """``personal.line_items``: a receipt's lines in the purchaser's product-level store."""

    customer_id: str
    receipt_id: str
    store_id: str
    chain: str
    purchased_at: int
    lines: list[PersonalLine]


class GroupTotal(TypedDict):
    """Lines summed per product group."""

    product_group: str
    amount_cents: int
    quantity_milli: int
    line_count: int


class MarketingSignal(TypedDict):
    """``marketing.signals``: a receipt summarised by product group, for marketing."""

    customer_id: str
    receipt_id: str
    purchased_at: int
    month: str
    groups: list[GroupTotal]


class EReceipt(TypedDict):
    """``ereceipts.archive``: the whole receipt as archived for its purchaser."""

    customer_id: str
    receipt: Receipt


class GroupAggregate(TypedDict):
    """``aggregates.group``: anonymous store x day x product-group sums."""

    store_id: str
    date: str
    chain: str
    receipt_count: int
    total_cents: int
    groups: list[GroupTotal]


class BonusMember(TypedDict):
    """A member's own eligible cents in a household-month."""

    customer_id: str
    eligible_cents: int


class BonusTally(TypedDict):
    """``household.bonus``: a household-month's Bonus figures."""

    household_id: str
    month: str
    eligible_cents: int
    receipt_count: int
    rate_bp: int
    bonus_cents: int
    payment_benefit_eligible_cents: int
    payment_benefit_cents: int
    members: list[BonusMember]
    closed: bool
    updated_at: int


class BonusStatement(TypedDict):
    """``bonus.statements``: a month's statement (seq 0) or a correction (seq > 0)."""

    household_id: str
    month: str
    seq: int
    kind: str  # STATEMENT or CORRECTION
    eligible_cents: int
    rate_bp: int
    bonus_cents: int
    payment_benefit_eligible_cents: int
    payment_benefit_cents: int
    members: list[BonusMember]
    delta_bonus_cents: int
    delta_payment_benefit_cents: int
    issued_at: int


class SmobiiliCounters(TypedDict):
    """``smobiili.counters``: a person's month (topologies/counters.py; removed: deleted)."""

    customer_id: str
    month: str
    removed: bool
    food_cents: int
    finnish_raw_cents: int
    finnish_made_cents: int
    foreign_cents: int
    unknown_origin_cents: int
    food_grams: int
    vegetable_grams: int
    co2e_grams: int
    unknown_gtin_lines: int
    line_count: int
    receipt_count: int
    domestic_share_pct: float | None
    finnish_raw_share_pct: float | None
    finnish_made_share_pct: float | None
    foreign_share_pct: float | None
    unknown_origin_share_pct: float | None
    vegetable_share_pct: float | None
    updated_at: int


class DeadLetter(TypedDict):
    """``deadletters``: a record no stage could process, with its original bytes."""

    stage: str
    topic: str
    partition: int
    offset: int
    reason: str
    error: str
    key: bytes | None
    value: bytes | None
    failed_at: int


class AuditRecord(TypedDict):
    """``audit.log``: who, whose, what, purpose, when, outcome."""

    at: int
    actor: str
    action: str
    subject_customer_id: str | None
    purpose: str
    outcome: str
    detail: str  # JSON


# --- internal topics ---------------------------------------------------------------------------


class CardLink(TypedDict):
    """A card's link: whose card it is, in which household, with which role."""

    card_number: str
    customer_id: str
    household_id: str
    role: str


class Identified(TypedDict):
    """``receipts.identified``: a receipt with the card link that held at its purchase time."""

    receipt: Receipt
    card: CardLink


class Contribution(TypedDict):
    """``aggregates.contributions``: one receipt's anonymous product-group sums."""

    receipt_id: str
    store_id: str
    chain: str
    date: str
    total_cents: int
    groups: list[GroupTotal]


# A period of a card link: ``to`` None while it holds ("from" is a keyword: functional syntax).
RegisterPeriod = TypedDict(
    "RegisterPeriod", {"household_id": str, "role": str, "from": int, "to": int | None}
)
# A card link with its period (topologies.card_register.periods).
LinkPeriod = TypedDict(
    "LinkPeriod",
    {
        "card_number": str,
        "customer_id": str,
        "household_id": str,
        "role": str,
        "from": int,
        "to": int | None,
    },
)


class RegisterPerson(TypedDict):
    """``register.people``: a person's periods on one card (empty: none any more)."""

    customer_id: str
    card_number: str
    periods: list[RegisterPeriod]


class RegisterHousehold(TypedDict):
    """``register.households``: a person's periods on one card in one household."""

    household_id: str
    customer_id: str
    card_number: str
    periods: list[RegisterPeriod]
