"""Stage 2, keyed by customer id: the consent join and the routing of each line item by purpose.

Inputs: ``receipts.identified`` (from stage 1), ``customer.consents``, ``recall.requests``
and ``register.people`` (all keyed by customer id, co-partitioned). The stores and their keys
are listed in :mod:`topologies.personal_stores`; revocation and erasure are in
:mod:`topologies.personal_erasure`, the retention purge in :mod:`topologies.personal_retention`,
product recalls in :mod:`topologies.recall` and the read queries in :mod:`topologies.queries`.

Consent-gated stores take a line item only if the flag has been on without a break since
its purchase time (:func:`topologies.consent.decide`). The total record is written *last*
and doubles as the dedupe mark: the state store has one changelog partition per customer
partition, so when the mark survives a crash, everything written before it survived too.
A redelivered receipt re-emits what is stored for it (so outputs lost in a crash are sent
again under the same keys) and changes nothing.

The S-mobiili counters (:mod:`topologies.counters`) are the one store that *adds* rather than
overwrites, so a receipt written twice would count twice. The other stores are idempotent
writes: a crash that keeps ``pl|`` but loses ``rt|`` is repaired by the redelivery writing
the same keys again. For ``cn|`` that is not enough. A crash keeps a prefix of a step's
writes: the changelog is one partition per customer partition, written in order. It can
therefore keep ``cn|`` (the receipt counted) and lose ``rt|`` (the mark), and the redelivery
would then count the receipt again. So the counter value carries its own mark,
``last_receipt_id``: the receipt whose contribution was added last. The write that counts a
receipt is the write that marks it. This one id is enough. Any later receipt's ``cn|`` write
comes after this receipt's ``rt|`` in the changelog, so if the torn receipt's ``rt|`` was lost,
nothing written after it survived either. The torn receipt is therefore the last one counted
into its month. A receipt is thus counted exactly when its ``rt|`` is absent and its
month's ``last_receipt_id`` is not its id. A contribution is computed from the catalogue as
it is when the receipt is first counted and is never recomputed, so a redelivery after a
catalogue change does not move the counter either.
"""

from __future__ import annotations

from typing import Any, cast

from topologies import card_register, counters, recall
from topologies import consent as consent_rules
from topologies.catalog import UNKNOWN_GROUP, group_totals
from topologies.context import Context
from topologies.personal_erasure import on_consent
from topologies.personal_retention import RETENTION_SWEEP_KEY, index_for_expiry, purge_expired
from topologies.personal_stores import (
    COUNTERS_TOPIC,
    ERECEIPTS,
    GATED,
    LINE_ITEMS,
    RECEIPT_TOTALS,
    SIGNALS,
    Erased,
    RecallEntry,
    counter_key,
    erased_key,
    output_key,
    recall_key,
    register_key,
    store_key,
)
from topologies.record_types import (
    CardLink,
    Consent,
    EReceipt,
    Identified,
    Line,
    MarketingSignal,
    PersonalLineItems,
    Product,
    RecallRequest,
    Receipt,
    ReceiptTotal,
    RegisterPerson,
)
from topologies.records import Emit, Reject, StepResult
from topologies.schedule import run_on_grid
from topologies.state import State

STAGE = "personal_routing"
INPUTS = ("receipts.identified", "customer.consents", recall.INPUT, card_register.CUSTOMERS_TOPIC)


def step(
    ctx: Context, state: State, topic: str, key: str | None, value: dict[str, Any] | None
) -> StepResult:
    """Process one record of the stage's inputs (a receipt, a consent, a recall, a link)."""
    if topic == "customer.consents":
        return on_consent(ctx, state, key, cast("Consent | None", value))
    if topic == recall.INPUT:
        return recall.step(ctx, state, key, cast("RecallRequest | None", value))
    if topic == card_register.CUSTOMERS_TOPIC:
        return _on_register(state, key, cast("RegisterPerson | None", value))
    return _on_receipt(ctx, state, key, cast("Identified | None", value))


def _on_register(state: State, key: str | None, value: RegisterPerson | None) -> StepResult:
    """The person's periods on one card, from the card register (stage 1)."""
    result = StepResult()
    if key is None or value is None or value["customer_id"] != key:
        result.rejects.append(Reject("key_mismatch", "register record not keyed by its person"))
        return result
    periods = value["periods"]
    erased: Erased | None = state.get(erased_key(key))
    if erased is not None:
        # Links that began before the erasure stay erased; a new customership may follow.
        periods = [p for p in periods if p["from"] > erased["erased_at"]]
    rkey = register_key(key, value["card_number"])
    held = state.get(rkey)
    if periods and held != periods:
        state.set(rkey, periods)
    elif not periods and held is not None:
        state.delete(rkey)
    result.events["register_updated"] += 1
    return result


# --- receipts ----------------------------------------------------------------------------


def _on_receipt(
    ctx: Context, state: State, key: str | None, value: Identified | None
) -> StepResult:
    """Route a receipt's line items by purpose and consent; its total always (module doc)."""
    result = StepResult()
    if value is None or key is None:
        result.rejects.append(Reject("missing_value", "receipts.identified needs key and value"))
        return result
    receipt, card = value["receipt"], value["card"]
    cid, rid = card["customer_id"], receipt["receipt_id"]
    if key != cid:
        result.rejects.append(Reject("key_mismatch", "identified receipt not keyed by customer"))
        return result
    rt_key = store_key(RECEIPT_TOTALS, cid, rid)
    stored_total: ReceiptTotal | None = state.get(rt_key)
    if stored_total is not None:
        result.events["duplicate"] += 1
        _reemit(ctx, state, cid, rid, stored_total, result)
        return result
    erased: Erased | None = state.get(erased_key(cid))
    if erased is not None and receipt["purchased_at"] <= erased["erased_at"]:
        # A purchase made before the person was erased, delivered after it: storing anything
        # about the person would undo the erasure, but the household's Bonus must not lose
        # it (the ledger keeps household-level figures and drops redeliveries by receipt id).
        result.events["erased_customer"] += 1
        result.emits.append(
            Emit("receipts.totals", card["household_id"], _total_record(receipt, card))
        )
        return result

    held: consent_rules.ConsentState | None = state.get(consent_rules.key(cid))
    t = receipt["purchased_at"]
    product_level = ctx.rules.is_product_level(receipt["chain"])
    lines: list[Line] = receipt["lines"] if product_level else []
    n = len(lines)
    okey = output_key(cid, rid)

    # Product-level personal store (purchaser only).
    # Lines of total-only chains were dropped (and counted) in stage 1, so n == 0 there.
    reason = consent_rules.decide(held, consent_rules.PRODUCT_LEVEL_SERVICES, t)
    result.routed[("personal", reason)] += n
    if product_level and reason == consent_rules.ALLOWED and n:
        products = [ctx.catalog(line["gtin"]) for line in lines]
        record: PersonalLineItems = {
            "customer_id": cid,
            "receipt_id": rid,
            "store_id": receipt["store_id"],
            "chain": receipt["chain"],
            "purchased_at": t,
            "lines": [
                {**line, "product_group": p["product_group"] if p else UNKNOWN_GROUP}
                for line, p in zip(lines, products, strict=True)
            ],
        }
        state.set(store_key(LINE_ITEMS, cid, rid), record)
        result.emits.append(Emit("personal.line_items", okey, record))
        _count(ctx, state, cid, rid, t, lines, products, result)

    # Marketing signals: nothing finer than product groups, and only with consent.
    reason = consent_rules.decide(held, consent_rules.MARKETING_TARGETING, t)
    result.routed[("marketing", reason)] += n
    if product_level and reason == consent_rules.ALLOWED and n:
        signal: MarketingSignal = {
            "customer_id": cid,
            "receipt_id": rid,
            "purchased_at": t,
            "month": ctx.rules.local_month(t),
            "groups": group_totals(ctx, lines),
        }
        state.set(store_key(SIGNALS, cid, rid), signal)
        result.emits.append(Emit("marketing.signals", okey, signal))

    # E-receipt archive: the whole receipt as stored (total-only chains: no lines).
    reason = consent_rules.decide(held, consent_rules.E_RECEIPTS, t)
    result.routed[("ereceipt", reason)] += n
    if reason == consent_rules.ALLOWED:
        archived: EReceipt = {"customer_id": cid, "receipt": {**receipt, "lines": lines}}
        state.set(store_key(ERECEIPTS, cid, rid), archived)
        result.emits.append(Emit("ereceipts.archive", okey, archived))

    # Recall index: legal duty, whatever the consent; product-level chains only.
    if product_level and n:
        entry: RecallEntry = {
            "card_number": card["card_number"],
            "customer_id": cid,
            "receipt_id": rid,
            "purchased_at": t,
            "gtins": sorted({line["gtin"] for line in lines}),
        }
        state.set(recall_key(ctx.rules.local_date(t), cid, rid), entry)
        result.routed[("recall", consent_rules.ALLOWED)] += n

    index_for_expiry(state, ctx.rules.local_date(t), cid, rid)
    # The total record, last: it is the dedupe mark (see module docstring).
    total = _total_record(receipt, card)
    state.set(rt_key, total)
    result.emits.append(Emit("receipts.totals", card["household_id"], total))
    result.events["routed"] += 1
    return result


def _total_record(receipt: Receipt, card: CardLink) -> ReceiptTotal:
    return {
        "receipt_id": receipt["receipt_id"],
        "card_number": card["card_number"],
        "customer_id": card["customer_id"],
        "household_id": card["household_id"],
        "role": card["role"],
        "store_id": receipt["store_id"],
        "chain": receipt["chain"],
        "purchased_at": receipt["purchased_at"],
        "total_cents": receipt["total_cents"],
        "bonus_eligible_cents": receipt["bonus_eligible_cents"],
        "payment_method": receipt["payment_method"],
        "original_receipt_id": receipt.get("original_receipt_id"),
    }


def _count(
    ctx: Context,
    state: State,
    cid: str,
    rid: str,
    purchased_at: int,
    lines: list[Line],
    products: list[Product | None],
    result: StepResult,
) -> None:
    """Add the receipt's lines to its month's counters (once) and emit the month's figures."""
    month = ctx.rules.local_month(purchased_at)
    ckey = counter_key(cid, month)
    counter = state.get(ckey)
    if counter is None or counter.get("last_receipt_id") != rid:
        # Not counted yet (see the module docstring: a torn earlier attempt is recognised by
        # the counter's own mark, since it is always the last receipt counted in its month).
        counter = counter if counter is not None else counters.empty()
        counters.add(counter, counters.receipt_contribution(products, lines))
        counter["last_receipt_id"] = rid
        counter["updated_at"] = ctx.now_ms
        state.set(ckey, counter)
        result.events["counters_updated"] += 1
    result.emits.append(Emit(COUNTERS_TOPIC, cid, counters.record(cid, month, counter)))


def _reemit(
    ctx: Context, state: State, cid: str, rid: str, total: ReceiptTotal, result: StepResult
) -> None:
    okey = output_key(cid, rid)
    for prefix, (topic, _purpose, _flag) in GATED.items():
        stored = state.get(store_key(prefix, cid, rid))
        if stored is not None:
            result.emits.append(Emit(topic, okey, stored))
            if prefix == "pl":
                # The month's counters as they are now (they include this receipt).
                month = ctx.rules.local_month(stored["purchased_at"])
                counter = state.get(counter_key(cid, month))
                if counter is not None:
                    result.emits.append(
                        Emit(COUNTERS_TOPIC, cid, counters.record(cid, month, counter))
                    )
    result.emits.append(Emit("receipts.totals", total["household_id"], total))


def tick(ctx: Context, state: State) -> StepResult:
    """Time-driven work: the retention purge, every ``retention.sweep_interval_minutes``.

    The purge runs on a fixed grid of the processing clock, so a redone tick lands on the same
    slot.
    """
    result = StepResult()
    run_on_grid(
        ctx,
        state,
        RETENTION_SWEEP_KEY,
        ctx.rules.retention_sweep_interval_ms,
        lambda: purge_expired(ctx, state, result),
    )
    return result
