"""The simulated world: catalogue, stores, households, people and their cards, built from one
seeded ``random.Random``; the event helpers every part of the stream uses."""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, TypeVar

import orjson

from stream.simulator.catalogue_data import (
    _BASKETS,
    _CHAINS,
    _CO2E_BY_NAME,
    _FOREIGN_PREFIXES,
    _GROUPS,
    _Chain,
    _luhn_digit,
    gtin_check_digit,
)
from stream.simulator.config import DAY_MS, ORIGINS, Event, SimConfig, SimStats
from topologies import consent

_T = TypeVar("_T")


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


class _World:
    """The static world of a run and the event plumbing its parts share (the heap of
    events due at a later receipt)."""

    def __init__(self, cfg: SimConfig, stats: SimStats) -> None:
        self.cfg = cfg
        self.stats = stats
        # Seeded on purpose: the same SimConfig gives the same events (synthetic data, not
        # security), so the standard generator is the right one.
        self.rng = random.Random(cfg.seed)  # noqa: S311
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
        self.card_rng = random.Random(cfg.seed * 7919 + 17)  # noqa: S311 - seeded, as above
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
                consent.PRODUCT_LEVEL_SERVICES: rng.random() < cfg.product_level_services,
                consent.MARKETING_TARGETING: rng.random() < cfg.marketing_targeting,
                consent.EXTERNAL_AUDIENCES: rng.random() < cfg.external_audiences,
                consent.DIRECT_MARKETING: rng.random() < cfg.direct_marketing,
                consent.E_RECEIPTS: rng.random() < cfg.e_receipts,
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

    def _event(self, topic: str, key: str | None, value: Any, ts: int) -> Event:
        self.stats.events_by_topic[topic] += 1
        return {"topic": topic, "key": key, "value": value, "timestamp": ts}

    def _queue(self, due: int, topic: str, key: str | None, value: Any) -> None:
        self.seq += 1
        heapq.heappush(self.pending, (due, self.seq, topic, key, value))

    def _pending_event(self, ts: int) -> Event:
        _, _, topic, key, value = heapq.heappop(self.pending)
        if isinstance(value, bytes):  # a re-delivery: the very bytes of the first delivery
            value = orjson.loads(value)
            self.stats.duplicates.append(value["receipt_id"])
        return self._event(topic, key, value, ts)
