"""Deterministic POS event simulator: a realistic, reproducible stream of input events.

It generates what the four input topics carry (``product.catalog``, ``customer.cards``,
``customer.consents``, ``pos.receipts``) as plain event dicts, the same shape as one line of a
replay JSONL file::

    {"topic": str, "key": str | None, "value": dict | None, "timestamp": int}

``value`` is the record with its Avro field names (timestamps epoch millis, money integer
cents), ``None`` is a tombstone, ``timestamp`` is the broker timestamp (non-decreasing over the
stream). Everything is drawn from one ``random.Random(seed)``: the same :class:`SimConfig`
gives the same events, byte for byte, in any process.

The stream is deliberately not clean. Besides ordinary receipts it holds, in configurable
shares: anonymous receipts, returns naming an earlier receipt, exact re-deliveries, late
receipts, receipts that break the rules (:data:`BAD_KINDS`), receipts whose card is registered
only after the receipt (parking), receipts with a card that is never registered, consent changes
with a few older versions re-sent out of order, customers with no consent record (fail closed),
a person moving household, closed cards, erased customers and products missing from the
catalogue. What was injected is counted, with ids, in :class:`SimStats`, because none of it is
tagged inside the records themselves. Undecodable payloads cannot be dicts:
:func:`bad_bytes_events` gives raw ones for the producer (:func:`bad_bytes_replay_events` as
replay-file lines with ``value_b64``).

The data is synthetic: ids and card numbers are random, product names are generic and no
person's name appears anywhere.
"""

from __future__ import annotations

import base64
import heapq
import math
import random
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, TypeVar

import orjson

from topologies.consent import FLAGS as CONSENT_FLAGS

Event = dict[str, Any]
_T = TypeVar("_T")

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


@dataclass(frozen=True)
class _Chain:
    name: str
    prefix: str  # store id prefix
    receipt_share: float  # share of all receipts
    store_share: float  # share of all outlets
    basket: str  # product pool; "" for total-only chains
    mean_lines: float  # mean line count (product level) or mean total in cents (total only)


# Receipt shares: the four grocery chains carry ~80 % of receipts. Outlet shares roughly follow
# the real networks (many S-markets, Alepas and restaurants, few department stores).
_CHAINS = (
    _Chain("S_MARKET", "SM", 0.35, 0.22, "grocery", 13.0),
    _Chain("PRISMA", "PR", 0.21, 0.05, "hypermarket", 15.0),
    _Chain("ALEPA", "AL", 0.14, 0.10, "convenience", 7.0),
    _Chain("SALE", "SA", 0.12, 0.09, "convenience", 8.0),
    _Chain("ABC", "AB", 0.05, 0.09, "station", 2.5),
    _Chain("FOOD_MARKET_HERKKU", "FH", 0.015, 0.01, "grocery", 11.0),
    _Chain("SOKOS", "SO", 0.015, 0.01, "department", 2.5),
    _Chain("EMOTION", "EM", 0.005, 0.01, "beauty", 2.0),
    _Chain("MARKS_SPENCER", "MS", 0.005, 0.005, "marks", 4.0),
    _Chain("KODIN_TERRA", "KT", 0.005, 0.005, "hardware", 2.5),
    _Chain("S_RAUTA", "SR", 0.01, 0.03, "hardware", 3.0),
    _Chain("PRISMA_RAUTA", "RP", 0.005, 0.005, "hardware", 3.0),
    _Chain("HOTEL", "HO", 0.01, 0.04, "", 16_000.0),
    _Chain("RESTAURANT", "RE", 0.04, 0.30, "", 2_800.0),
    _Chain("PARTNER", "PA", 0.02, 0.03, "", 4_500.0),
)
CHAINS = tuple(c.name for c in _CHAINS)
PRODUCT_LEVEL_CHAINS = tuple(c.name for c in _CHAINS if c.basket)


@dataclass(frozen=True)
class _Group:
    name: str
    food: bool
    vegetable: bool
    co2e: float | None  # typical kg CO2e per kg at the store gate; None = no factor
    share: float  # share of the catalogue
    weighed: float  # share of products sold by weight (unit KG)
    price: tuple[int, int]  # cents per piece
    kg_price: tuple[int, int]  # cents per kg (weighed products)
    kg_grams: tuple[int, int]  # grams bought of a weighed product
    sizes: tuple[int, ...]  # net weights in grams of packed products; () = none
    origin: tuple[float, float, float, float]  # weights of ORIGINS
    names: tuple[str, ...]
    bonus: bool = True  # bonus eligible (alcohol and gift cards are not)
    liquid: bool = False  # sizes are millilitres (name says "l")


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(","))


_NF = (0.0, 0.10, 0.50, 0.40)  # non-food origin mix: mostly imported or unknown
_NO: tuple[int, int] = (0, 0)

# One row per product group. Columns: name, food, vegetable, CO2e (kg/kg, None = no factor),
# share of catalogue, share weighed, cents per piece, cents per kg, grams bought when weighed,
# pack sizes (g or ml), origin weights (FINNISH_RAW, FINNISH_MADE, FOREIGN, UNKNOWN), names.
# fmt: off
_GROUPS = (
    _Group("VEGETABLES", True, True, 0.9, 0.08, 0.5, (99, 399), (129, 799), (150, 1500),
           (150, 250, 300, 400, 500, 1000), (0.45, 0.05, 0.45, 0.05), _names(
               "Tomato, Cucumber, Carrot, Potato, Onion, Iceberg lettuce, Bell pepper, "
               "White cabbage, Broccoli, Beetroot, Swede, Leek, Zucchini, Cauliflower, Spinach, "
               "Garlic, Parsnip, Red onion, Celery, Sweet potato")),
    _Group("FRUIT_BERRIES", True, True, 0.7, 0.06, 0.5, (129, 599), (99, 1499), (150, 2000),
           (125, 200, 250, 500, 1000), (0.15, 0.05, 0.75, 0.05), _names(
               "Apple, Banana, Orange, Pear, Grapes, Lemon, Lingonberries, Bilberries, "
               "Strawberries, Raspberries, Kiwi, Mandarin, Melon, Plum, Blueberries, "
               "Sea buckthorn berries")),
    _Group("MUSHROOMS", True, True, 1.0, 0.01, 0.3, (199, 499), (599, 1999), (100, 600),
           (200, 250, 400), (0.60, 0.10, 0.25, 0.05), _names(
               "Button mushrooms, Chanterelles, Oyster mushrooms, Shiitake, Porcini, "
               "Funnel chanterelles")),
    _Group("DAIRY", True, False, 3.0, 0.10, 0.02, (79, 899), (1200, 3500), (150, 600),
           (200, 250, 500, 1000, 1500), (0.70, 0.12, 0.15, 0.03), _names(
               "Milk, Skimmed milk, Yoghurt, Quark, Butter, Edam cheese, Emmental cheese, Cream, "
               "Sour cream, Buttermilk, Cottage cheese, Squeaky cheese, Creme fraiche, "
               "Lactose-free milk")),
    _Group("MEAT", True, False, 7.0, 0.07, 0.15, (249, 1499), (899, 3999), (150, 1200),
           (300, 400, 500, 600, 1000), (0.75, 0.10, 0.13, 0.02), _names(
               "Beef mince, Pork mince, Chicken fillet strips, Pork chops, Sausage, "
               "Ham cold cuts, Meatballs, Turkey fillet, Lamb chops, Sauteed reindeer, "
               "Chicken drumsticks, Smoked ham")),
    _Group("FISH", True, False, 4.0, 0.03, 0.3, (299, 1499), (1299, 3999), (150, 900),
           (150, 200, 300, 400), (0.30, 0.25, 0.40, 0.05), _names(
               "Salmon fillet, Rainbow trout, Baltic herring, Vendace, Pike-perch fillet, "
               "Tuna in water, Herring in mustard sauce, Shrimps, Cod fillet")),
    _Group("EGGS", True, False, 2.5, 0.01, 0.0, (199, 449), _NO, _NO,
           (378, 600, 630), (0.90, 0.02, 0.05, 0.03), _names(
               "Eggs 6 pcs, Eggs 10 pcs, Free-range eggs, Organic eggs")),
    _Group("BREAD", True, False, 1.0, 0.06, 0.05, (99, 499), (499, 1299), (100, 600),
           (270, 300, 400, 500, 640), (0.50, 0.35, 0.12, 0.03), _names(
               "Rye bread, Oat bread, Toast bread, Crispbread, Karelian pasties, Baguette, "
               "Cinnamon buns, Rye crisps, Multigrain rolls")),
    _Group("DRY_GOODS", True, False, 1.5, 0.12, 0.01, (89, 599), (299, 1499), (100, 800),
           (200, 400, 500, 750, 1000, 2000), (0.25, 0.25, 0.45, 0.05), _names(
               "Oat flakes, Wheat flour, Pasta, Rice, Coffee, Tea, Sugar, Breakfast cereal, "
               "Rye flour, Tomato sauce, Canned tomatoes, Ketchup, Mustard, Rapeseed oil, Salt, "
               "Spice mix, Peanut butter, Muesli, Beans")),
    _Group("FROZEN", True, False, 2.0, 0.06, 0.0, (149, 899), _NO, _NO,
           (250, 300, 400, 500, 750, 1000), (0.30, 0.20, 0.45, 0.05), _names(
               "Frozen pizza, Frozen peas, Fish fingers, Ice cream, Frozen berries, "
               "Frozen vegetable mix, Frozen meatballs, Frozen fries, Frozen salmon soup")),
    _Group("BEVERAGES", True, False, 0.5, 0.07, 0.0, (69, 499), _NO, _NO,
           (330, 500, 1000, 1500), (0.15, 0.50, 0.30, 0.05), _names(
               "Mineral water, Orange juice, Apple juice, Cola, Lemonade, Oat drink, "
               "Energy drink, Lingonberry drink, Sparkling water, Iced coffee"), liquid=True),
    _Group("ALCOHOL", False, False, None, 0.05, 0.0, (149, 2499), _NO, _NO,
           (330, 500, 750), (0.15, 0.50, 0.30, 0.05), _names(
               "Lager beer, Cider, Long drink, Hard seltzer, Pale ale, Stout, "
               "Fermented wine drink"), bonus=False, liquid=True),
    _Group("SWEETS", True, False, 3.0, 0.06, 0.08, (99, 599), (999, 1699), (100, 500),
           (50, 100, 150, 200, 350), (0.10, 0.50, 0.35, 0.05), _names(
               "Milk chocolate bar, Liquorice, Salty liquorice, Pick and mix, Chewing gum, "
               "Biscuits, Crisps, Fruit gums, Pastilles, Chocolate box")),
    _Group("READY_MEALS", True, False, 3.0, 0.05, 0.0, (249, 899), _NO, _NO,
           (300, 350, 400, 500), (0.35, 0.45, 0.15, 0.05), _names(
               "Macaroni casserole, Salmon soup, Meat soup, Lasagne, Chicken curry, Pea soup, "
               "Vegetable patties, Sushi box, Salad box, Pizza slice")),
    _Group("HOUSEHOLD", False, False, None, 0.05, 0.0, (99, 1499), _NO, _NO, (), _NF, _names(
               "Dish soap, Laundry detergent, Toilet paper, Kitchen roll, Bin bags, "
               "Dishwasher tablets, Sponges, Aluminium foil, Cling film, Candles, Batteries, "
               "Light bulb")),
    _Group("HYGIENE", False, False, None, 0.05, 0.0, (149, 1999), _NO, _NO, (), _NF, _names(
               "Shampoo, Toothpaste, Toothbrush, Shower gel, Deodorant, Hand cream, Face cream, "
               "Sunscreen, Razor, Cotton pads, Plasters, Diapers")),
    _Group("PET_SUPPLIES", False, False, None, 0.02, 0.0, (149, 2999), _NO, _NO, (), _NF, _names(
               "Dry cat food, Wet dog food, Cat litter, Dog treats, Bird seed")),
    _Group("HARDWARE", False, False, None, 0.08, 0.03, (199, 19999), (499, 1999), (100, 2000),
           (), (0.0, 0.20, 0.55, 0.25), _names(
               "Screws, Nails, Hammer, Screwdriver set, Drill bits, Wall paint 2.7 l, "
               "Paint brush, Masking tape, Sandpaper, Wall plugs, Extension cord, Work gloves, "
               "Silicone sealant, Spirit level, Tape measure, Timber 48x98, Insulation roll, "
               "Cement")),
    _Group("GARDEN", False, False, None, 0.03, 0.0, (199, 9999), _NO, _NO, (), _NF, _names(
               "Potting soil, Fertiliser, Flower seeds, Garden hose, Rake, Snow shovel, "
               "Plant pot, Bird feeder")),
    _Group("HOME", False, False, None, 0.04, 0.0, (299, 14999), _NO, _NO, (), _NF, _names(
               "Towel, Bed linen set, Mug, Plate, Frying pan, Saucepan, Kitchen knife, "
               "Cutting board, Vase, Cushion, Blanket, Table lamp, Storage box")),
    _Group("CLOTHING", False, False, None, 0.06, 0.0, (499, 19999), _NO, _NO, (), _NF, _names(
               "T-shirt, Jeans, Socks, Underwear, Hoodie, Winter jacket, Wool cap, Mittens, "
               "Dress, Shirt, Trousers, Sneakers, Rain boots, Scarf")),
    _Group("COSMETICS", False, False, None, 0.03, 0.0, (499, 7999), _NO, _NO, (), _NF, _names(
               "Lipstick, Mascara, Perfume, Nail polish, Foundation, Eye shadow palette, "
               "Face serum")),
    _Group("ELECTRONICS", False, False, None, 0.01, 0.0, (999, 39999), _NO, _NO, (), _NF,
           _names("Headphones, Phone charger, USB cable, Bluetooth speaker, Power bank, "
                  "Electric kettle, Coffee maker, Toaster")),
    _Group("GIFT_CARDS", False, False, None, 0.002, 0.0, (2000, 10000), _NO, _NO, (),
           (0.0, 0.0, 0.0, 1.0), ("Gift card",), bonus=False),
)

# Per-name CO2e factors where the group's typical value would be badly off (kg CO2e / kg).
_CO2E_BY_NAME = {
    "Beef mince": 26.0, "Lamb chops": 24.0, "Sauteed reindeer": 9.0, "Pork mince": 6.5,
    "Pork chops": 6.5, "Chicken fillet strips": 4.5, "Chicken drumsticks": 4.0,
    "Turkey fillet": 5.0, "Butter": 9.0, "Edam cheese": 10.0, "Emmental cheese": 11.0,
    "Squeaky cheese": 10.0, "Milk": 1.2, "Skimmed milk": 1.1, "Lactose-free milk": 1.2,
    "Buttermilk": 1.2, "Yoghurt": 1.6, "Coffee": 8.0, "Rice": 3.0, "Tomato": 1.2,
    "Bell pepper": 1.4, "Potato": 0.2, "Carrot": 0.2, "Banana": 0.9, "Oat drink": 0.4,
    "Mineral water": 0.2, "Milk chocolate bar": 4.5,
}

# Product-group weights of a basket per store format (the chain's "basket").
_GROCERY = {
    "VEGETABLES": 13, "FRUIT_BERRIES": 9, "MUSHROOMS": 1, "DAIRY": 16, "MEAT": 9, "FISH": 3,
    "EGGS": 2, "BREAD": 9, "DRY_GOODS": 10, "FROZEN": 4, "BEVERAGES": 6, "ALCOHOL": 4,
    "SWEETS": 5, "READY_MEALS": 4, "HOUSEHOLD": 3, "HYGIENE": 2, "PET_SUPPLIES": 1,
    "GIFT_CARDS": 0.1,
}
_BASKETS: dict[str, dict[str, float]] = {
    "grocery": _GROCERY,
    "hypermarket": {**_GROCERY, "HOME": 2, "CLOTHING": 2, "HARDWARE": 1, "ELECTRONICS": 0.5,
                    "GARDEN": 0.5, "COSMETICS": 0.5},
    "convenience": {**_GROCERY, "READY_MEALS": 7, "BEVERAGES": 9, "ALCOHOL": 5, "HOUSEHOLD": 2,
                    "PET_SUPPLIES": 0.5},
    "station": {"BEVERAGES": 20, "READY_MEALS": 20, "SWEETS": 20, "BREAD": 8, "DAIRY": 6,
                "ALCOHOL": 5, "DRY_GOODS": 5, "FRUIT_BERRIES": 3, "HOUSEHOLD": 3, "HYGIENE": 2},
    "department": {"CLOTHING": 40, "COSMETICS": 20, "HOME": 20, "HYGIENE": 10, "SWEETS": 5,
                   "ELECTRONICS": 3, "GIFT_CARDS": 1},
    "beauty": {"COSMETICS": 60, "HYGIENE": 35, "GIFT_CARDS": 1},
    "marks": {"CLOTHING": 45, "SWEETS": 15, "DRY_GOODS": 15, "READY_MEALS": 10, "HOME": 10,
              "BEVERAGES": 5},
    "hardware": {"HARDWARE": 60, "GARDEN": 20, "HOUSEHOLD": 10, "HOME": 8, "ELECTRONICS": 2},
    # lines that a total-only till (restaurant, hotel bar, partner) sends although it should not
    "restaurant": {"READY_MEALS": 50, "BEVERAGES": 30, "ALCOHOL": 20},
}
# fmt: on
PRODUCT_GROUPS = tuple(g.name for g in _GROUPS)


# GS1 prefixes used for non-Finnish codes (Germany, Sweden, Netherlands, Italy, Denmark, ...).
_FOREIGN_PREFIXES = ("400", "401", "590", "730", "731", "871", "800", "570", "500", "700", "841")


def gtin_check_digit(body: str) -> int:
    """GS1 check digit of the first 12 digits of a GTIN-13 (weights 1,3,1,3,... from the left)."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return (10 - total % 10) % 10


def is_valid_gtin(gtin: str) -> bool:
    """True for a 13-digit string whose last digit is the GS1 check digit of the first 12."""
    return len(gtin) == 13 and gtin.isdigit() and gtin_check_digit(gtin[:12]) == int(gtin[12])


def _luhn_digit(body: str) -> int:
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return (10 - total % 10) % 10


# SimConfig fields that are fractions
_SHARES = (
    "no_consent", "product_level_services", "marketing_targeting", "external_audiences",
    "direct_marketing", "e_receipts", "anonymous", "returns", "late", "bad", "duplicates",
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


class _Person:
    __slots__ = ("customer_id", "household_id", "role", "cards", "late", "erased")

    def __init__(self, customer_id: str, household_id: str, role: str) -> None:
        self.customer_id = customer_id
        self.household_id = household_id
        self.role = role
        self.cards: list[str] = []  # open cards
        self.late = False  # owns a late card: kept out of moves, closures and erasure
        self.erased = False


# A product as the line generator needs it: gtin, weighed, cents per piece or per kg,
# bonus eligible, min grams, max grams.
_Sku = tuple[str, bool, int, bool, int, int]


def _pick(seq: Sequence[_T], cum: Sequence[float], u: float) -> _T:
    """The item of ``seq`` at uniform ``u`` in [0, 1) under cumulative weights ``cum``."""
    return seq[bisect_right(cum, u * cum[-1], 0, len(cum) - 1)]


def _skewed_price(rng: random.Random, bounds: tuple[int, int]) -> int:
    """A price in ``bounds``, cheap ones more common (mean at a third of the range)."""
    lo, hi = bounds
    return lo + int((hi - lo) * rng.random() ** 2)


def _count(n: int, rate: float) -> int:
    """How many of a scheduled rare case: rate × n, but at least one when rate > 0."""
    if rate <= 0 or n <= 0:
        return 0
    return max(1, round(n * rate))


class _Simulation:
    def __init__(self, cfg: SimConfig, stats: SimStats) -> None:
        self.cfg = cfg
        self.stats = stats
        self.rng = random.Random(cfg.seed)
        self.seq = 0  # tie-breaker in the pending heap
        self.receipt_no = 0
        # (due receipt index, seq, topic, key, value) sent at the broker time of that receipt
        self.pending: list[tuple[int, int, str, str | None, Any]] = []
        # Candidates for a return: (key, receipt as JSON). Serialised because consumers may
        # modify the dicts they are given; a sample only, to keep the cost small.
        self.returnable: list[tuple[str, bytes]] = []
        # lognormal mu per chain, so that the mean line count (or total) is the chain's
        self.mu = {c.name: math.log(c.mean_lines) - (0.245 if c.basket else 0.18) for c in _CHAINS}
        self._build_catalogue()
        self._build_stores()
        self._build_population()
        self.person_by_id = {p.customer_id: p for p in self.people}

    # -- static data ---------------------------------------------------------------------

    def _gtin(self, used: set[str], prefix: str) -> str:
        rng = self.rng
        while True:
            body = prefix + "".join(str(rng.randrange(10)) for _ in range(12 - len(prefix)))
            gtin = body + str(gtin_check_digit(body))
            if gtin not in used:
                used.add(gtin)
                return gtin

    def _build_catalogue(self) -> None:
        cfg, rng = self.cfg, self.rng
        total_share = sum(g.share for g in _GROUPS)
        used: set[str] = set()
        self.products: list[dict[str, Any]] = []
        skus_by_group: dict[str, list[_Sku]] = {}
        pop_by_group: dict[str, list[float]] = {}
        for g in _GROUPS:
            n = max(1, round(cfg.products * g.share / total_share))
            skus: list[_Sku] = []
            for _ in range(n):
                base = rng.choice(g.names)
                weighed = rng.random() < g.weighed
                origin = rng.choices(ORIGINS, weights=g.origin)[0]
                finnish = origin in ("FINNISH_RAW", "FINNISH_MADE")
                # The prefix only tells who issued the code: weighed items get in-store codes
                # (20-29), Finnish products mostly 64x but not always, imports mostly foreign
                # prefixes but some carry a Finnish importer's 64x code.
                if weighed:
                    prefix = "2" + str(rng.randrange(10))
                elif (rng.random() < 0.85) if finnish else (rng.random() < 0.2):
                    prefix = "64" + str(rng.randrange(10))
                else:
                    prefix = rng.choice(_FOREIGN_PREFIXES)
                gtin = self._gtin(used, prefix)
                if g.name == "GIFT_CARDS":
                    price = rng.choice((2000, 2500, 5000, 10000))
                    name = f"Gift card {price // 100} EUR"
                    net: int | None = None
                elif weighed:
                    price = _skewed_price(rng, g.kg_price)
                    name = f"{base}, sold by weight"
                    net = None
                else:
                    price = _skewed_price(rng, g.price) // 10 * 10 + 9
                    net = rng.choice(g.sizes) if g.sizes else None
                    if net is None:
                        name = base
                    elif g.liquid:
                        name = f"{base} {net / 1000:g} l"
                    else:
                        name = f"{base} {net / 1000:g} kg" if net >= 1000 else f"{base} {net} g"
                co2e = _CO2E_BY_NAME.get(base, g.co2e)
                if co2e is not None:
                    co2e = round(co2e * rng.uniform(0.8, 1.2), 2)
                    if rng.random() < 0.03:  # factor not yet assessed for this product
                        co2e = None
                self.products.append({
                    "gtin": gtin,
                    "name": name,
                    "product_group": g.name,
                    "food": g.food,
                    "vegetable": g.vegetable,
                    "origin": origin,
                    "net_weight_grams": net,
                    "co2e_kg_per_kg": co2e,
                })  # fmt: skip
                lo, hi = g.kg_grams
                skus.append((gtin, weighed, max(1, price), g.bonus, lo, hi))
            skus_by_group[g.name] = skus
            # Zipf-like popularity inside the group: a few products sell most.
            ranks = list(range(1, n + 1))
            rng.shuffle(ranks)
            pop_by_group[g.name] = [1.0 / r**0.9 for r in ranks]
        n_hidden = _count(len(self.products), cfg.uncatalogued_products)
        hidden = rng.sample(range(len(self.products)), n_hidden)
        self.hidden_gtins = {self.products[i]["gtin"] for i in hidden}
        self.stats.uncatalogued_gtins = [self.products[i]["gtin"] for i in sorted(hidden)]
        self.stats.products = len(self.products) - n_hidden

        self.baskets: dict[str, tuple[list[_Sku], list[float]]] = {}
        for basket, group_weights in _BASKETS.items():
            pool: list[_Sku] = []
            weights: list[float] = []
            for gname, gw in group_weights.items():
                pops = pop_by_group[gname]
                norm = sum(pops)
                pool.extend(skus_by_group[gname])
                weights.extend(gw * p / norm for p in pops)
            self.baskets[basket] = (pool, list(accumulate(weights)))

    def _build_stores(self) -> None:
        cfg = self.cfg
        self.stores: list[tuple[str, _Chain]] = []
        weights: list[float] = []
        total_store_share = sum(c.store_share for c in _CHAINS)
        for c in _CHAINS:
            n = max(1, round(cfg.stores * c.store_share / total_store_share))
            for k in range(1, n + 1):
                self.stores.append((f"{c.prefix}{k:04d}", c))
                weights.append(c.receipt_share / n)
        self.store_cum = list(accumulate(weights))
        pl = [(s, w) for s, w in zip(self.stores, weights, strict=True) if s[1].basket]
        self.pl_stores = [s for s, _ in pl]
        self.pl_store_cum = list(accumulate(w for _, w in pl))

    def _card_number(self, used: set[str]) -> str:
        rng = self.rng
        while True:
            body = "7000" + str(rng.randrange(10**11)).zfill(11)
            card = body + str(_luhn_digit(body))
            if card not in used:
                used.add(card)
                return card

    def _build_population(self) -> None:
        cfg, rng, stats = self.cfg, self.rng, self.stats
        self.people: list[_Person] = []
        self.households: dict[str, list[_Person]] = {}
        self.card_owner: dict[str, _Person] = {}
        # Versions and formats of card records, and role changes, draw from their own
        # generator: the rest of a seed's stream stays what it was before they existed.
        self.card_rng = random.Random(cfg.seed * 7919 + 17)
        self.card_versions: dict[str, int] = {}
        self.open_cards: list[str] = []
        self.card_pos: dict[str, int] = {}
        self.consent: dict[str, dict[str, Any]] = {}  # latest version per customer
        self.history: dict[str, list[dict[str, Any]]] = {}  # emitted versions per customer
        self.stale_candidates: list[str] = []
        self.used_cards: set[str] = set()
        hh_numbers = rng.sample(range(10**7, 10**8), cfg.households + cfg.receipts // 1000 + 64)
        self.spare_household_ids = [f"HH{n}" for n in hh_numbers[cfg.households :]]
        n_people_max = cfg.households * 4
        cust_numbers = rng.sample(range(10**8, 10**9), n_people_max)
        ci = 0
        for h in range(cfg.households):
            hh_id = f"HH{hh_numbers[h]}"
            size = rng.choices((1, 2, 3, 4), weights=(0.38, 0.33, 0.15, 0.14))[0]
            members: list[_Person] = []
            for m in range(size):
                person = _Person(
                    f"C{cust_numbers[ci]}", hh_id, "MAIN_MEMBER" if m == 0 else "MEMBER"
                )
                ci += 1
                for _ in range(2 if rng.random() < 0.2 else 1):
                    card = self._card_number(self.used_cards)
                    person.cards.append(card)
                    self.card_owner[card] = person
                    self._open_card(card)
                members.append(person)
                self.people.append(person)
            self.households[hh_id] = members
        stats.households = cfg.households
        stats.customers = len(self.people)
        stats.cards = len(self.open_cards)

        n_late = _count(len(self.open_cards), cfg.late_cards)
        late = sorted(rng.sample(range(len(self.open_cards)), n_late))
        self.late_waiting: dict[str, bool] = {}  # card -> not yet scheduled for registration
        for i in late:
            card = self.open_cards[i]
            self.late_waiting[card] = True
            self.card_owner[card].late = True
            stats.late_cards.append(card)
        # Cards shown at tills but missing from the register for good.
        self.unknown_cards = [self._card_number(self.used_cards) for _ in range(50)]

        for person in self.people:
            if rng.random() < cfg.no_consent:
                stats.customers_without_consent += 1
                continue
            version = 1 + (rng.random() < 0.3) + (rng.random() < 0.1)
            record = {
                "customer_id": person.customer_id,
                "version": version,
                "effective_at": cfg.start_ms - rng.randrange(DAY_MS, 700 * DAY_MS),
                "product_level_services": rng.random() < cfg.product_level_services,
                "marketing_targeting": rng.random() < cfg.marketing_targeting,
                "external_audiences": rng.random() < cfg.external_audiences,
                "direct_marketing": rng.random() < cfg.direct_marketing,
                "e_receipts": rng.random() < cfg.e_receipts,
                "source": rng.choices(
                    ("migration", "S-mobiili", "customer-service"), weights=(0.5, 0.35, 0.15)
                )[0]
                if version == 1
                else rng.choices(("S-mobiili", "customer-service"), weights=(0.8, 0.2))[0],
            }
            self.consent[person.customer_id] = record
            self.history[person.customer_id] = [record]

    def _open_card(self, card: str) -> None:
        self.card_pos[card] = len(self.open_cards)
        self.open_cards.append(card)

    def _close_card(self, card: str) -> None:
        i = self.card_pos.pop(card)
        last = self.open_cards.pop()
        if last != card:
            self.open_cards[i] = last
            self.card_pos[last] = i
        self.card_owner[card].cards.remove(card)

    def _card_record(self, card: str, person: _Person, ts: int | None = None) -> dict[str, Any]:
        """The card's register record; ``ts``: its broker time, which it takes effect at."""
        record: dict[str, Any] = {
            "card_number": card,
            "customer_id": person.customer_id,
            "household_id": person.household_id,
            "role": person.role,
        }
        version = self.card_versions[card] = self.card_versions.get(card, 0) + 1
        if self.card_rng.random() >= self.cfg.unversioned_cards:
            record["effective_at"] = ts
            record["version"] = version
        return record

    # -- the stream ----------------------------------------------------------------------

    def _event(self, topic: str, key: str | None, value: Any, ts: int) -> Event:
        self.stats.events_by_topic[topic] += 1
        return {"topic": topic, "key": key, "value": value, "timestamp": ts}

    def run(self) -> Iterator[Event]:
        cfg, rng, stats = self.cfg, self.rng, self.stats
        ts = cfg.start_ms - 2 * HOUR_MS
        for product in self.products:
            if product["gtin"] not in self.hidden_gtins:
                yield self._event(CATALOG, product["gtin"], product, ts)
        ts = cfg.start_ms - HOUR_MS
        for members in self.households.values():
            for person in members:
                for card in person.cards:
                    if card not in self.late_waiting:
                        yield self._event(CARDS, card, self._card_record(card, person, ts), ts)
                record = self.consent.get(person.customer_id)
                if record is not None:
                    yield self._event(CONSENTS, person.customer_id, dict(record), ts)

        n = cfg.receipts
        schedule: dict[int, list[str]] = {}
        for _ in range(_count(n, cfg.role_changes)):
            schedule.setdefault(self.card_rng.randrange(n), []).append("role")
        for action, count in (
            ("consent", _count(n, cfg.consent_changes)),
            ("move", _count(n, cfg.household_moves)),
            ("close", _count(n, cfg.card_closures)),
            ("erase", _count(n, cfg.erasures)),
        ):
            for _ in range(count):
                schedule.setdefault(rng.randrange(n), []).append(action)
                if action == "consent" and rng.random() < cfg.stale_consents:
                    # a gateway re-sends an old version later: put it in the second half so
                    # that customers with two versions exist by then
                    schedule.setdefault(rng.randrange(n // 2, n), []).append("stale")
        # Each late card is shown at a till at least once (it may be picked earlier, too).
        forced_cards = {rng.randrange(n): card for card in stats.late_cards} if n else {}

        t = float(cfg.start_ms)
        rate = cfg.receipts_per_second / 1000.0  # receipts per ms
        expovariate = rng.expovariate
        pending = self.pending
        for i in range(n):
            t += expovariate(rate)
            ts = int(t)
            while pending and pending[0][0] <= i:
                yield self._pending_event(ts)
            actions = schedule.pop(i, None)
            if actions:
                for action in actions:
                    events = self._change(action, ts)
                    if events is None:  # nothing to act on yet: try again at the next receipt
                        schedule.setdefault(i + 1, []).append(action)
                    else:
                        yield from events
            yield self._receipt(i, ts, forced_cards.get(i))
        ts = int(t)
        while pending:
            yield self._pending_event(ts)
        for card, waiting in self.late_waiting.items():
            if waiting:  # never shown at a till: registered at the end all the same
                self.late_waiting[card] = False
                record = self._card_record(card, self.card_owner[card], ts)
                yield self._event(CARDS, card, record, ts)
        for actions in schedule.values():  # retries that ran past the last receipt
            for action in actions:
                yield from self._change(action, ts) or ()

    def _queue(self, due: int, topic: str, key: str | None, value: Any) -> None:
        self.seq += 1
        heapq.heappush(self.pending, (due, self.seq, topic, key, value))

    def _pending_event(self, ts: int) -> Event:
        _, _, topic, key, value = heapq.heappop(self.pending)
        if isinstance(value, bytes):  # a re-delivery: the very bytes of the first delivery
            value = orjson.loads(value)
            self.stats.duplicates.append(value["receipt_id"])
        return self._event(topic, key, value, ts)

    # -- population changes --------------------------------------------------------------

    def _change(self, action: str, ts: int) -> list[Event] | None:
        """Run one scheduled change; None when there is nothing to act on yet (retry later)."""
        if action == "consent":
            return self._consent_change(ts)
        if action == "stale":
            return self._stale_consent(ts)
        if action == "move":
            return self._move(ts)
        if action == "role":
            return self._role_change(ts)
        if action == "close":
            return self._close(ts)
        if action == "erase":
            return self._erase(ts)
        raise ValueError(action)

    def _random_person(self, accept: Callable[[_Person], bool]) -> _Person | None:
        rng, people = self.rng, self.people
        for _ in range(500):
            person = people[rng.randrange(len(people))]
            if not person.erased and accept(person):
                return person
        return None

    def _consent_change(self, ts: int) -> list[Event]:
        rng, stats = self.rng, self.stats
        person = self._random_person(lambda p: True)
        if person is None:
            return []
        cid = person.customer_id
        current = self.consent.get(cid)
        source = rng.choices(("S-mobiili", "customer-service"), weights=(0.85, 0.15))[0]
        effective_at = ts - rng.randrange(0, 1500)
        if current is None:  # somebody without a record opts in for the first time
            record = {
                "customer_id": cid,
                "version": 1,
                "effective_at": effective_at,
                "product_level_services": rng.random() < 0.8,
                "marketing_targeting": rng.random() < 0.4,
                "external_audiences": rng.random() < 0.15,
                "direct_marketing": rng.random() < 0.3,
                "e_receipts": rng.random() < 0.25,
                "source": source,
            }
            if not any(record[f] for f in CONSENT_FLAGS):
                record["product_level_services"] = True
            stats.consent_opt_ins += 1
        else:
            flag = rng.choices(CONSENT_FLAGS, weights=(0.4, 0.3, 0.08, 0.12, 0.1))[0]
            record = dict(current)
            record[flag] = not current[flag]
            record["version"] = current["version"] + 1
            record["effective_at"] = max(effective_at, current["effective_at"] + 1)
            record["source"] = source
            if current[flag]:
                stats.consent_revocations += 1
                if flag == "product_level_services":
                    stats.product_level_revocations.append(cid)
            else:
                stats.consent_opt_ins += 1
        history = self.history.setdefault(cid, [])
        history.append(record)
        if len(history) == 2:
            self.stale_candidates.append(cid)
        self.consent[cid] = record
        stats.consent_changes += 1
        return [self._event(CONSENTS, cid, dict(record), ts)]  # a copy: history stays intact

    def _stale_consent(self, ts: int) -> list[Event] | None:
        rng, candidates = self.rng, self.stale_candidates
        while candidates:
            i = rng.randrange(len(candidates))
            cid = candidates[i]
            if self.person_by_id[cid].erased:
                candidates[i] = candidates[-1]
                candidates.pop()
                continue
            older = rng.choice(self.history[cid][:-1])
            self.stats.stale_consents.append((cid, older["version"]))
            return [self._event(CONSENTS, cid, dict(older), ts)]
        return None

    def _move(self, ts: int) -> list[Event]:
        rng = self.rng
        person = self._random_person(lambda p: p.role == "MEMBER" and not p.late and bool(p.cards))
        if person is None:
            return []
        old = person.household_id
        self.households[old].remove(person)
        new = ""
        if rng.random() < 0.5:  # joins another household as a member
            for _ in range(500):
                other = self.people[rng.randrange(len(self.people))]
                if other.household_id != old and not other.erased:
                    new = other.household_id
                    break
        if new:
            person.role = "MEMBER"
        else:  # moves out and founds a household of their own
            new = self.spare_household_ids.pop()
            person.role = "MAIN_MEMBER"
            self.households[new] = []
        self.households[new].append(person)
        person.household_id = new
        self.stats.household_moves.append((person.customer_id, old, new))
        return [self._event(CARDS, c, self._card_record(c, person, ts), ts) for c in person.cards]

    def _role_change(self, ts: int) -> list[Event]:
        """The main member hands over to another member of the household (both keep cards)."""
        rng = self.card_rng
        candidates = [
            hh
            for hh, members in self.households.items()
            if len(members) > 1 and all(p.cards and not p.late for p in members)
        ]
        if not candidates:
            return []
        hh = candidates[rng.randrange(len(candidates))]
        members = self.households[hh]
        old = next(p for p in members if p.role == "MAIN_MEMBER")
        new = rng.choice([p for p in members if p is not old])
        old.role, new.role = "MEMBER", "MAIN_MEMBER"
        self.stats.role_changes.append((hh, old.customer_id, new.customer_id))
        return [
            self._event(CARDS, c, self._card_record(c, p, ts), ts)
            for p in (old, new)
            for c in p.cards
        ]

    def _close(self, ts: int) -> list[Event]:
        rng, cards = self.rng, self.open_cards
        for _ in range(500):
            if not cards:
                break
            card = cards[rng.randrange(len(cards))]
            person = self.card_owner[card]
            # A main member keeps at least one card, so that every household keeps its main
            # member in the card register.
            if person.late or (person.role == "MAIN_MEMBER" and len(person.cards) < 2):
                continue
            self._close_card(card)
            self.stats.closed_cards.append(card)
            return [self._event(CARDS, card, None, ts)]
        return []

    def _erase(self, ts: int) -> list[Event]:
        person = self._random_person(
            lambda p: (
                not p.late and (p.role == "MEMBER" or len(self.households[p.household_id]) == 1)
            )
        )
        if person is None:
            return []
        events = []
        for card in list(person.cards):
            self._close_card(card)
            events.append(self._event(CARDS, card, None, ts))
        members = self.households[person.household_id]
        members.remove(person)
        if not members:
            del self.households[person.household_id]
        person.erased = True
        self.consent.pop(person.customer_id, None)
        events.append(self._event(CONSENTS, person.customer_id, None, ts))
        self.stats.erased_customers.append(person.customer_id)
        return events

    # -- receipts ------------------------------------------------------------------------

    def _receipt_id(self, store_id: str) -> str:
        self.receipt_no += 1
        n = self.receipt_no
        return f"{store_id}-{1 + n % 8:02d}-{n:08d}"

    def _lines(self, basket: str, n: int, gift: bool) -> tuple[list[dict[str, Any]], int, int]:
        pool, cum = self.baskets[basket]
        rnd = self.rng.random
        lines: list[dict[str, Any]] = []
        total = eligible_total = 0
        top, last = cum[-1], len(cum) - 1
        skus = [pool[bisect_right(cum, rnd() * top, 0, last)] for _ in range(n)]
        for no, (gtin, weighed, price, bonus, lo, hi) in enumerate(skus, 1):
            if weighed:
                qm = lo + int((hi - lo) * rnd())
                amount = (price * qm + 500) // 1000 or 1
                unit = "KG"
            else:
                r = rnd()
                q = 1 if r < 0.78 else 2 if r < 0.92 else 3 if r < 0.97 else 4 + int(3 * rnd())
                qm = q * 1000
                amount = price * q
                unit = "PCS"
            eligible = bonus and not gift
            lines.append({
                "line_no": no,
                "gtin": gtin,
                "unit": unit,
                "quantity_milli": qm,
                "amount_cents": amount,
                "bonus_eligible": eligible,
            })  # fmt: skip
            total += amount
            if eligible:
                eligible_total += amount
        return lines, total, eligible_total

    def _receipt(self, i: int, ts: int, forced_card: str | None) -> Event:
        cfg, rng, stats = self.cfg, self.rng, self.stats
        rnd = rng.random
        r = rnd()
        if r < cfg.returns and self.returnable and forced_card is None:
            return self._return(i, ts)
        late = r < cfg.returns + cfg.late
        bad = not late and r < cfg.returns + cfg.late + cfg.bad

        unknown = False
        card: str | None
        if forced_card is not None:
            card = forced_card
        elif rnd() < cfg.anonymous or not self.open_cards:
            card = None
        elif rnd() < cfg.unknown_cards:
            card = rng.choice(self.unknown_cards)
            unknown = True
        else:  # skewed: cards early in the pool shop more often
            cards = self.open_cards
            card = cards[int(len(cards) * rnd() ** 1.2)]
        if bad:
            store_id, chain = _pick(self.pl_stores, self.pl_store_cum, rnd())
        else:
            store_id, chain = _pick(self.stores, self.store_cum, rnd())
        if card is None:
            pay = _pick(PAYMENT_METHODS, _PAY_ANONYMOUS, rnd())
        else:
            pay = _pick(PAYMENT_METHODS, _PAY_CARD, rnd())
        gift = pay == "GIFT_CARD"
        if late:  # till offline or batch upload: hours, sometimes days late
            back = rng.randrange(HOUR_MS, 12 * HOUR_MS if rnd() < 0.6 else 4 * DAY_MS)
            purchased_at = ts - back
        else:
            purchased_at = ts - rng.randrange(80, 900)
        rid = self._receipt_id(store_id)

        if chain.basket:
            n = int(rng.lognormvariate(self.mu[chain.name], 0.7) + 0.5)
            n = 1 if n < 1 else 40 if n > 40 else n
            lines, total, eligible = self._lines(chain.basket, n, gift)
        else:
            stats.total_only += 1
            if rnd() < cfg.total_only_with_lines:
                stats.total_only_with_lines += 1
                lines, total, eligible = self._lines("restaurant", rng.randint(1, 6), gift)
            else:
                lines = []
                total = max(100, int(rng.lognormvariate(self.mu[chain.name], 0.6)))
                # the till computes the eligible part itself (e.g. drinks with alcohol are not)
                share = 1.0 if rnd() < 0.7 else rng.uniform(0.5, 0.95)
                eligible = 0 if gift else int(total * share)
        record = {
            "receipt_id": rid,
            "store_id": store_id,
            "chain": chain.name,
            "card_number": card,
            "purchased_at": purchased_at,
            "total_cents": total,
            "bonus_eligible_cents": eligible,
            "payment_method": pay,
            "original_receipt_id": None,
            "lines": lines,
        }
        key = store_id if card is None else card
        stats.receipts += 1
        if card is None:
            stats.anonymous += 1
        elif unknown:
            stats.unknown_card_receipts.append(rid)
        if late:
            stats.late.append(rid)
        if bad:
            self._break(record)
        elif chain.basket:
            self._keep_returnable(key, record)
        if card is not None and self.late_waiting.get(card):
            # the card register catches up a little later: the receipt has to wait (parking)
            self.late_waiting[card] = False
            stats.late_card_first_receipt[card] = rid
            person = self.card_owner[card]
            self._queue(i + rng.randint(1, 200), CARDS, card, self._card_record(card, person))
        if rnd() < cfg.duplicates:
            # the gateway did not get an ack and sends the same receipt again
            delay = rng.randint(1, 300) if rnd() < 0.9 else rng.randint(300, 20_000)
            self._queue(i + delay, RECEIPTS, key, orjson.dumps(record))
        return self._event(RECEIPTS, key, record, ts)

    def _keep_returnable(self, key: str, record: dict[str, Any]) -> None:
        buf = self.returnable
        if len(buf) < 500:
            buf.append((key, orjson.dumps(record)))
        elif self.rng.random() < 0.1:
            entry = (key, orjson.dumps(record))
            if len(buf) < 5000:
                buf.append(entry)
            else:
                buf[self.rng.randrange(5000)] = entry

    def _return(self, i: int, ts: int) -> Event:
        rng, buf = self.rng, self.returnable
        j = rng.randrange(len(buf))
        key, snapshot = buf[j]
        original = orjson.loads(snapshot)
        buf[j] = buf[-1]
        buf.pop()
        old_lines = original["lines"]
        k = 1 if rng.random() < 0.6 else rng.randint(1, len(old_lines))
        picked = sorted(rng.sample(range(len(old_lines)), k))
        lines = []
        for no, x in enumerate(picked, 1):
            line = old_lines[x]
            lines.append({
                **line,
                "line_no": no,
                "quantity_milli": -line["quantity_milli"],
                "amount_cents": -line["amount_cents"],
            })  # fmt: skip
        rid = self._receipt_id(original["store_id"])
        record = {
            "receipt_id": rid,
            "store_id": original["store_id"],
            "chain": original["chain"],
            "card_number": original["card_number"],
            "purchased_at": ts - rng.randrange(80, 900),
            "total_cents": sum(line["amount_cents"] for line in lines),
            "bonus_eligible_cents": sum(
                line["amount_cents"] for line in lines if line["bonus_eligible"]
            ),
            "payment_method": original["payment_method"],
            "original_receipt_id": original["receipt_id"],
            "lines": lines,
        }
        self.stats.receipts += 1
        if record["card_number"] is None:
            self.stats.anonymous += 1
        self.stats.returns.append(rid)
        if rng.random() < self.cfg.duplicates:
            self._queue(i + rng.randint(1, 300), RECEIPTS, key, orjson.dumps(record))
        return self._event(RECEIPTS, key, record, ts)

    def _break(self, record: dict[str, Any]) -> None:
        rng = self.rng
        kind = rng.choice(self.cfg.bad_kinds)
        lines = record["lines"]
        if kind == "total_mismatch":
            record["total_cents"] += rng.randint(1, 500)
        elif kind == "eligible_mismatch":
            record["bonus_eligible_cents"] = record["total_cents"] + rng.randint(1, 500)
        elif kind == "negative_sale":
            for line in lines:
                line["quantity_milli"] = -line["quantity_milli"]
                line["amount_cents"] = -line["amount_cents"]
            record["total_cents"] = -record["total_cents"]
            record["bonus_eligible_cents"] = -record["bonus_eligible_cents"]
        else:  # bad_gtin
            line = lines[rng.randrange(len(lines))]
            gtin = line["gtin"]
            line["gtin"] = gtin[:12] + str((int(gtin[12]) + rng.randint(1, 9)) % 10)
        self.stats.bad[record["receipt_id"]] = kind


def generate(cfg: SimConfig | None = None, stats: SimStats | None = None) -> Iterator[Event]:
    """Yield the events of one simulated run, in stream order.

    Order: the catalogue, then the card register and consents of the population (late cards
    held back), then the receipt stream with consent changes, card changes, late cards and
    re-deliveries interleaved. ``timestamp`` is non-decreasing. Pass a :class:`SimStats` to
    learn what was injected; it is complete when the iterator is exhausted.
    """
    sim = _Simulation(cfg or SimConfig(), stats if stats is not None else SimStats())
    return sim.run()


def simulate(cfg: SimConfig | None = None) -> tuple[list[Event], SimStats]:
    """All events of a run as a list, with what was injected."""
    stats = SimStats()
    events = list(generate(cfg, stats))
    return events, stats


def write_jsonl(
    events: Iterable[Event],
    path: str | Path,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write one orjson line per event; returns the count. ``progress(n)`` every 10,000 events."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    chunk: list[bytes] = []
    dumps = orjson.dumps
    with path.open("wb") as f:
        for event in events:
            chunk.append(dumps(event))
            n += 1
            if len(chunk) == 10_000:
                f.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
                if progress is not None:
                    progress(n)
        if chunk:
            f.write(b"\n".join(chunk) + b"\n")
    if progress is not None:
        progress(n)
    return n


def read_jsonl(path: str | Path) -> Iterator[Event]:
    """The events of a JSONL file written by :func:`write_jsonl` (blank lines skipped)."""
    with Path(path).open("rb") as f:
        for line in f:
            if line.strip():
                yield orjson.loads(line)


def bad_bytes_events() -> list[tuple[str, bytes | None, bytes]]:
    """Raw payloads no codec can decode, as ``(topic, key, value)`` for the producer.

    A dict event cannot carry them (the producer encodes every dict), so they travel beside the
    stream: garbage, JSON where Avro is expected, a wrong magic byte, an unknown schema id
    (9999) and a payload shorter than the 5-byte Confluent header.
    """
    unknown_schema = b"\x00" + (9999).to_bytes(4, "big")
    return [
        (RECEIPTS, b"SM0001", b"\xde\xad\xbe\xef not a receipt \xff\xfe"),
        (RECEIPTS, b"SM0001", b'{"receipt_id": "SM0001-01-json", "total_cents": 100}'),
        (RECEIPTS, b"PR0001", b"\x01" + (1).to_bytes(4, "big") + b"\x02\x06abc"),
        (RECEIPTS, b"AL0001", unknown_schema + b"\x02\x06abc\x00"),
        (RECEIPTS, None, b"\x00\x00\x00"),
        (CARDS, b"7000000000000000", b"garbage card"),
        (CONSENTS, b"C000000000", unknown_schema + b"\x00"),
    ]


def bad_bytes_replay_events(timestamp: int = DEFAULT_START_MS) -> list[Event]:
    """:func:`bad_bytes_events` as replay-file events (raw value base64 in ``value_b64``)."""
    return [
        {
            "topic": topic,
            "key": None if key is None else key.decode(),
            "value_b64": base64.b64encode(value).decode("ascii"),
            "timestamp": timestamp,
        }
        for topic, key, value in bad_bytes_events()
    ]
