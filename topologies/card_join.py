"""Stage 1, keyed by card number: join each receipt with the card register.

Inputs: ``pos.receipts`` and ``customer.cards`` (both keyed by card number, co-partitioned).

- A valid receipt with no card is anonymous: it only feeds the anonymous group aggregates.
- A receipt whose card is known is forwarded, with its card, to ``receipts.identified``
  keyed by customer id (the repartition that co-locates it with the customer's consent).
- A receipt whose card is not known yet is parked under ``park|<card>|<receipt>`` and
  released when the card arrives; after ``rules.park_window_ms`` of processing time it is
  dead-lettered with its original bytes (``card_unknown_timeout``). Nothing is lost.
- The card register in time (topologies/card_register.py): each card's history of links;
  a receipt is joined with the link that held at its ``purchased_at``, whatever arrived
  since, so a move, closure or role change after a purchase does not move it, and the
  order of processing (a restart, a backlog) cannot change a Bonus. A purchase made while
  the card was closed is anonymous.
- Line items of total-only chains are dropped here, before anything is stored (docs/domain.md §1).

Stage 1 keeps no dedupe state: redeliveries are forwarded and every downstream stage drops
them by receipt id, so a crash between forwarding and committing cannot lose a receipt.
"""

from __future__ import annotations

import base64
from typing import Any, TypedDict, cast

import orjson

from topologies import card_register
from topologies.catalog import group_totals
from topologies.context import Context
from topologies.record_types import Card, CardLink, Contribution, Identified, Receipt
from topologies.records import Emit, Origin, Reject, StepResult
from topologies.state import State
from topologies.validation import check_receipt

STAGE = "card_join"
INPUTS = ("pos.receipts", "customer.cards")
PURPOSES = ("personal", "marketing", "ereceipt", "recall")
SWEEP_KEY = "meta|park_sweep_at"


class Parked(TypedDict):
    """A receipt waiting for its card (``park|<card>|<receipt>``), with where it came from."""

    receipt: Receipt
    parked_at: int
    topic: str
    partition: int
    offset: int
    raw_key: str | None  # base64
    raw_value: str | None


def card_key(card_number: str) -> str:
    """State key of a card's history (topologies/card_register.py)."""
    return card_register.key(card_number)


def park_key(card_number: str, receipt_id: str) -> str:
    """State key of a parked receipt."""
    return f"park|{card_number}|{receipt_id}"


def step(
    ctx: Context, state: State, topic: str, key: str | None, value: dict[str, Any] | None
) -> StepResult:
    """Process one record of ``customer.cards`` or ``pos.receipts``."""
    if topic == "customer.cards":
        result = _on_card(ctx, state, key, cast("Card | None", value))
    else:
        result = _on_receipt(ctx, state, key, cast("Receipt | None", value))
    _maybe_sweep(ctx, state, result)
    return result


def _on_card(ctx: Context, state: State, key: str | None, card: Card | None) -> StepResult:
    """A card register record: one more entry in the card's history (topologies/card_register)."""
    result = StepResult()
    if key is None:
        result.rejects.append(Reject("missing_key", "customer.cards record without a card key"))
        return result
    if card is not None:
        if card["card_number"] != key:
            result.rejects.append(
                Reject("key_mismatch", "record key is not the record's card_number")
            )
            return result
        if "|" in key or "|" in card["customer_id"] or "|" in card["household_id"]:
            # "|" separates the segments of state keys; an id containing it could read or
            # purge another person's keys.
            result.rejects.append(Reject("bad_identifier", "identifiers must not contain '|'"))
            return result
        if card["role"] not in card_register.ROLES:
            result.rejects.append(Reject("bad_role", f"role {card['role']!r}"))
            return result
    held = card_register.migrate(state.get(card_key(key)))
    history = card_register.apply(held, card, ctx.now_ms)
    if history is None:
        result.events["stale_card"] += 1  # a version not above the one accepted
        if held is not None:  # what a crash may have cut short: the release, the propagation
            _release_parked(ctx, state, key, held, result)
            _propagate(key, held, held, result)
        return result
    history = card_register.prune(history, _history_cutoff(ctx)) or history
    _propagate(key, held, history, result)
    # Released before the card is written: the card's entry is the last write, so if it
    # survived a crash, the release did too (the changelog keeps a prefix of the writes).
    _release_parked(ctx, state, key, history, result)
    state.set(card_key(key), history)
    result.events["card_closed" if card is None else "card_updated"] += 1
    return result


def _propagate(
    card: str,
    before: card_register.CardHistory | None,
    after: card_register.CardHistory,
    result: StepResult,
) -> None:
    for topic, k, value in card_register.propagate(card, before, after):
        result.emits.append(Emit(topic, k, value))


def _history_cutoff(ctx: Context) -> int:
    return ctx.now_ms - ctx.rules.card_history_retention_ms


def _release_parked(
    ctx: Context, state: State, card: str, history: card_register.CardHistory, result: StepResult
) -> None:
    """Route the receipts waiting for this card, each with the link at its purchase time."""
    for pkey, parked in list(state.items(f"park|{card}|")):
        state.delete(pkey)
        result.events["released"] += 1
        receipt: Receipt = parked["receipt"]
        link = card_register.link_at(history, receipt["purchased_at"])
        if link is None:
            result.events["closed_card"] += 1
        _route(ctx, receipt, link, result)


def _on_receipt(ctx: Context, state: State, key: str | None, receipt: Receipt | None) -> StepResult:
    result = StepResult()
    if receipt is None:
        result.rejects.append(Reject("tombstone", "pos.receipts does not accept null values"))
        return result
    product_level = ctx.rules.is_product_level(receipt["chain"])
    problem = check_receipt(
        receipt, product_level=product_level, now_ms=ctx.now_ms, rules=ctx.rules
    )
    if problem is None:
        problem = _too_large(ctx, receipt)
    if problem is not None:
        result.rejects.append(problem)
        return result
    card_number = receipt["card_number"]
    if card_number is None:
        _route(ctx, receipt, None, result)
        return result
    if key != card_number:
        # The partition (and so the card lookup) follows the key: a wrong key would make a
        # known card look unknown.
        result.rejects.append(Reject("key_mismatch", "carded receipt not keyed by its card"))
        return result
    held = card_register.migrate(state.get(card_key(card_number)))
    if held is None:
        if not product_level and receipt["lines"]:
            # Stray lines of a total-only till are dropped before anything is stored.
            receipt = {**receipt, "lines": []}
        parked: Parked = {
            "receipt": receipt,
            "parked_at": ctx.now_ms,
            "topic": ctx.topic,
            "partition": ctx.partition,
            "offset": ctx.offset,
            "raw_key": _b64(ctx.raw_key),
            "raw_value": _b64(ctx.raw_value),
        }
        state.set(park_key(card_number, receipt["receipt_id"]), parked)
        result.events["parked"] += 1
        return result
    pruned = card_register.prune(held, _history_cutoff(ctx))
    if pruned is not None:  # entries past the history retention go as the card is used
        state.set(card_key(card_number), pruned)
        held = pruned
    link = card_register.link_at(held, receipt["purchased_at"])
    if link is None:  # bought while the card was closed
        result.events["closed_card"] += 1
    _route(ctx, receipt, link, result)
    return result


# The card link and the envelope that receipts.identified adds to the receipt, at most.
_IDENTIFIED_OVERHEAD = 1_024
# JSON is at most this many times the receipt's Avro bytes (a minimal line is ~9 bytes of
# Avro and ~95 of JSON with its field names; a control character 1 byte and 6): below
# max_record_bytes / this the exact size is not computed.
_JSON_PER_AVRO_BYTE = 12


def _too_large(ctx: Context, receipt: Receipt) -> Reject | None:
    """A receipt whose identified record (JSON) would exceed the broker's record limit.

    Checked at the door, before parking or routing: a receipt released later by its card's
    arrival must not be able to fail then (it would take the card record with it).
    """
    limit = ctx.rules.record_limit("receipts.identified") - _IDENTIFIED_OVERHEAD
    raw = ctx.raw_value
    if raw is not None and len(raw) * _JSON_PER_AVRO_BYTE <= limit:
        return None
    size = len(orjson.dumps(receipt))
    if size <= limit:
        return None
    return Reject("output_too_large", f"identified receipt would be {size} bytes > {limit}")


def _route(ctx: Context, receipt: Receipt, link: CardLink | None, result: StepResult) -> None:
    product_level = ctx.rules.is_product_level(receipt["chain"])
    if not product_level and receipt["lines"]:
        for purpose in PURPOSES:
            result.routed[(purpose, "total_only_chain")] += len(receipt["lines"])
        receipt = {**receipt, "lines": []}
    lines = receipt["lines"]
    contribution: Contribution = {
        "receipt_id": receipt["receipt_id"],
        "store_id": receipt["store_id"],
        "chain": receipt["chain"],
        "date": ctx.rules.local_date(receipt["purchased_at"]),
        "total_cents": receipt["total_cents"],
        "groups": group_totals(ctx, lines),
    }
    result.emits.append(Emit("aggregates.contributions", receipt["store_id"], contribution))
    if link is None:
        result.events["anonymous"] += 1
        if lines:
            for purpose in PURPOSES:
                result.routed[(purpose, "anonymous")] += len(lines)
        return
    identified: Identified = {"receipt": receipt, "card": link}
    result.emits.append(Emit("receipts.identified", link["customer_id"], identified))
    result.events["identified"] += 1


def _maybe_sweep(ctx: Context, state: State, result: StepResult) -> None:
    """Dead-letter parked receipts whose card did not arrive within the window."""
    due = state.get(SWEEP_KEY)
    if due is not None and ctx.now_ms < due:
        return
    state.set(SWEEP_KEY, ctx.now_ms + ctx.rules.park_sweep_interval_ms)
    cutoff = ctx.now_ms - ctx.rules.park_window_ms
    for pkey, parked in list(state.items("park|")):
        if parked["parked_at"] <= cutoff:
            state.delete(pkey)
            # Every receipt feeds the anonymous aggregates (docs/domain.md §3.5), even one whose
            # card never came; the dead letter keeps it for follow-up.
            _route(ctx, parked["receipt"], None, result)
            result.rejects.append(
                Reject(
                    "card_unknown_timeout",
                    "card not in the register within the parking window",
                    origin=Origin(
                        parked["topic"],
                        parked["partition"],
                        parked["offset"],
                        _unb64(parked["raw_key"]),
                        _unb64(parked["raw_value"]),
                    ),
                )
            )


def parked_count(state: State) -> int:
    """How many receipts are parked, waiting for their card."""
    return sum(1 for _ in state.items("park|"))


def parked_summary(state: State) -> tuple[int, int | None]:
    """How many receipts are parked, and the earliest ``parked_at`` (None when none is)."""
    count = 0
    oldest: int | None = None
    for _key, parked in state.items("park|"):
        count += 1
        t = parked["parked_at"]
        oldest = t if oldest is None or t < oldest else oldest
    return count, oldest


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def tick(ctx: Context, state: State) -> StepResult:
    """Sweep now, whatever the schedule (the clock moved without a record)."""
    result = StepResult()
    state.delete(SWEEP_KEY)
    _maybe_sweep(ctx, state, result)
    return result
