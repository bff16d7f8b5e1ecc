"""The card register in time: each card's history of links, and the link at a given time.

docs/domain.md §1 ("the card register in time"), after Kafka Streams' versioned key-value stores
(KIP-889) and stream-table join on event time (KIP-914). Stage 1 (``card_join``) keeps, per
card, the links it has had and since when::

    card|<card> -> {"v": highest accepted version or None,
                    "h": [[from_ms, link or None], ...]}   # sorted by from_ms

A link is ``{card_number, customer_id, household_id, role}``; ``None`` means the card was
closed from then on. The rules:

- a record's ``effective_at`` is when it starts to hold; without one, its broker timestamp;
- a record with a ``version`` not above the highest accepted one for the card is ignored
  (out-of-order delivery, redelivery); a record without a version is ordered by arrival;
- a tombstone closes the card from its broker timestamp;
- a receipt takes the link that held at its ``purchased_at``: the entry with the latest
  ``from_ms`` not after it -- or the first entry, when the purchase is older than every
  entry (the first record covers all time before it: a card never belonged to anyone else,
  and a receipt parked because its card was not yet known joins when the card arrives);
- a purchase while the card was closed is anonymous;
- entries that stopped holding before ``now - history_retention`` are dropped (the first
  one kept then covers all time before it); the retention covers the maximum lateness of a
  receipt plus the parking window, so no receipt that passes the door can need them.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, TypedDict, cast

from topologies.record_types import (
    Card,
    CardLink,
    LinkPeriod,
    RegisterHousehold,
    RegisterPeriod,
    RegisterPerson,
)

ROLES = ("MAIN_MEMBER", "MEMBER")
LINK_FIELDS = ("card_number", "customer_id", "household_id", "role")


class CardHistory(TypedDict):
    """A card's history (``card|<card>``): ``h`` is ``[[from_ms, CardLink or None], ...]``."""

    v: int | None
    h: list[list[Any]]


def _link(record: dict[str, Any] | Card) -> CardLink:
    return {
        "card_number": record["card_number"],
        "customer_id": record["customer_id"],
        "household_id": record["household_id"],
        "role": record["role"],
    }


def key(card_number: str) -> str:
    """State key of a card's history."""
    return f"card|{card_number}"


def migrate(held: dict[str, Any] | CardHistory | None) -> CardHistory | None:
    """State written before the register had a history: one entry covering all time."""
    if held is None or "h" in held:
        return cast("CardHistory | None", held)
    if held.get("closed"):
        return {"v": None, "h": [[0, None]]}
    return {"v": None, "h": [[0, _link(held)]]}


def apply(
    held: dict[str, Any] | CardHistory | None, card: Card | None, broker_ts: int
) -> CardHistory | None:
    """The history after one ``customer.cards`` record; None if the record is ignored."""
    history_held = migrate(held)
    history: list[list[Any]] = [list(e) for e in history_held["h"]] if history_held else []
    version = history_held["v"] if history_held else None
    link: CardLink | None
    if card is None:
        at, link = broker_ts, None
    else:
        v = card.get("version")
        if v is not None:
            if version is not None and v <= version:
                return None
            version = v
        eff = card.get("effective_at")
        at = broker_ts if eff is None else eff
        link = _link(card)
    froms = [e[0] for e in history]
    i = bisect_right(froms, at)
    if i and froms[i - 1] == at:
        history[i - 1] = [at, link]  # the same instant: the later record wins
    else:
        history.insert(i, [at, link])
    return {"v": version, "h": history}


def link_at(held: CardHistory, t: int) -> CardLink | None:
    """The link that held at ``t`` (None: the card was closed then)."""
    history = held["h"]
    i = bisect_right([e[0] for e in history], t)
    link: CardLink | None = history[max(i - 1, 0)][1]
    return link


def prune(held: CardHistory, cutoff: int) -> CardHistory | None:
    """The history without entries that stopped holding before ``cutoff``; None if none."""
    history = held["h"]
    drop = 0
    while drop + 1 < len(history) and history[drop + 1][0] <= cutoff:
        drop += 1
    if not drop:
        return None
    return {"v": held["v"], "h": history[drop:]}


def current(held: CardHistory) -> CardLink | None:
    """The link that holds from the latest entry on (None: closed)."""
    link: CardLink | None = held["h"][-1][1]
    return link


def periods(held: CardHistory) -> list[LinkPeriod]:
    """The history as periods: link fields with ``from`` and ``to`` (None: still holds)."""
    history = held["h"]
    out: list[LinkPeriod] = []
    for i, (start, held_link) in enumerate(history):
        if held_link is None:
            continue
        link: CardLink = held_link
        end = history[i + 1][0] if i + 1 < len(history) else None
        out.append({**link, "from": start, "to": end})
    return out


# --- the register for readers keyed by person and by household ------------------------------
#
# Stage 1 is keyed by card; who may see what (docs/domain.md §5) is decided by person (stage 2,
# keyed by customer) and by household (the Bonus ledger, keyed by household). Every accepted
# card record -- and every redelivered one, so a record lost in a crash is sent again -- is
# propagated as the card's periods per person (``register.people``) and per person in a
# household (``register.households``): the last value per (person, card) and per (household,
# person, card) is the register's answer there.

CUSTOMERS_TOPIC = "register.people"
HOUSEHOLDS_TOPIC = "register.households"


Propagated = tuple[str, str, RegisterPerson | RegisterHousehold]


def propagate(card_number: str, before: CardHistory | None, after: CardHistory) -> list[Propagated]:
    """``(topic, key, value)`` records for every person and household the card has had.

    ``before`` is the history before this record: a person or household that dropped out of
    the history (pruned, or a card that changed hands) gets an empty list, which deletes it.
    """
    now = periods(after)
    then = periods(before) if before is not None else []
    people = sorted({p["customer_id"] for p in now + then})
    pairs = sorted({(p["household_id"], p["customer_id"]) for p in now + then})
    out: list[Propagated] = []
    for cid in people:
        mine = [_period(p) for p in now if p["customer_id"] == cid]
        out.append(
            (
                CUSTOMERS_TOPIC,
                cid,
                {"customer_id": cid, "card_number": card_number, "periods": mine},
            )
        )
    for hh, cid in pairs:
        mine = [_period(p) for p in now if p["customer_id"] == cid and p["household_id"] == hh]
        value: RegisterHousehold = {
            "household_id": hh,
            "customer_id": cid,
            "card_number": card_number,
            "periods": mine,
        }
        out.append((HOUSEHOLDS_TOPIC, hh, value))
    return out


def _period(p: LinkPeriod) -> RegisterPeriod:
    return {"household_id": p["household_id"], "role": p["role"], "from": p["from"], "to": p["to"]}
