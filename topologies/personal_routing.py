"""Stage 2, keyed by customer id: the consent join and the routing of each line item by purpose.

Inputs: ``receipts.identified`` (from stage 1) and ``customer.consents`` (both keyed by
customer id, co-partitioned). Stores (prefix of the state key; docs/domain.md §3):

==========  ====================================  =========================================
``rt|``     receipt total records (always)        ``receipts.totals`` keyed by household
``pl|``     product-level personal store          ``personal.line_items`` (compacted)
``ms|``     marketing signals (product groups)    ``marketing.signals`` (compacted)
``er|``     e-receipt archive                     ``ereceipts.archive`` (compacted)
``cn|``     S-mobiili counters per Helsinki month ``smobiili.counters`` keyed by customer
            (``cn|<customer>|<YYYY-MM>``)
``rc|``     recall index by Helsinki date         none: only ``purchase-stream recall`` reads it
``consent|`` the person's consent state           none
==========  ====================================  =========================================

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

from datetime import date, timedelta
from typing import Any

from topologies import card_register, counters, recall
from topologies import consent as consent_rules
from topologies.catalog import UNKNOWN_GROUP, group_totals
from topologies.context import Context
from topologies.records import Emit, Reject, StepResult, audit_emit
from topologies.schedule import run_on_grid
from topologies.state import State

STAGE = "personal_routing"
INPUTS = ("receipts.identified", "customer.consents", recall.INPUT, card_register.CUSTOMERS_TOPIC)

# store prefix -> (output topic, purpose label, gating consent flag)
GATED = {
    "pl": ("personal.line_items", "personal", "product_level_services"),
    "ms": ("marketing.signals", "marketing", "marketing_targeting"),
    "er": ("ereceipts.archive", "ereceipt", "e_receipts"),
}
FLAG_STORE = {flag: prefix for prefix, (_t, _p, flag) in GATED.items()}
ACTOR = "purchase-stream"


def step(
    ctx: Context, state: State, topic: str, key: str | None, value: dict[str, Any] | None
) -> StepResult:
    if topic == "customer.consents":
        return _on_consent(ctx, state, key, value)
    if topic == recall.INPUT:
        return recall.step(ctx, state, key, value)
    if topic == card_register.CUSTOMERS_TOPIC:
        return _on_register(state, key, value)
    return _on_receipt(ctx, state, key, value)


def register_key(customer_id: str, card_number: str) -> str:
    return f"reg|{customer_id}|{card_number}"


def _on_register(state: State, key: str | None, value: dict[str, Any] | None) -> StepResult:
    """The person's periods on one card, from the card register (stage 1)."""
    result = StepResult()
    if key is None or value is None or value["customer_id"] != key:
        result.rejects.append(Reject("key_mismatch", "register record not keyed by its person"))
        return result
    periods = value["periods"]
    erased = state.get(erased_key(key))
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


def register_history(state: State, customer_id: str) -> list[dict[str, Any]]:
    """The person's card links: card, household, role, from, to (None: holds now)."""
    out: list[dict[str, Any]] = []
    for k, periods in state.items(f"reg|{customer_id}|"):
        card = k.rsplit("|", 1)[1]
        out.extend({"card_number": card, **p} for p in periods)
    return sorted(out, key=lambda p: (p["from"], p["card_number"]))


def register_now(state: State, customer_id: str) -> dict[str, Any] | None:
    """The person's household and role in the register now (the latest current link)."""
    current = [p for p in register_history(state, customer_id) if p["to"] is None]
    return current[-1] if current else None


def output_key(customer_id: str, receipt_id: str) -> str:
    return f"{customer_id}/{receipt_id}"


def erased_key(customer_id: str) -> str:
    return f"erased|{customer_id}"


def recall_key(date: str, customer_id: str, receipt_id: str) -> str:
    return f"rc|{date}|{customer_id}|{receipt_id}"


def counter_key(customer_id: str, month: str) -> str:
    """State key of a person's S-mobiili counters for a Helsinki month ``YYYY-MM``."""
    return f"cn|{customer_id}|{month}"


COUNTERS_TOPIC = "smobiili.counters"


# --- receipts ----------------------------------------------------------------------------


def _on_receipt(
    ctx: Context, state: State, key: str | None, value: dict[str, Any] | None
) -> StepResult:
    result = StepResult()
    if value is None or key is None:
        result.rejects.append(Reject("missing_value", "receipts.identified needs key and value"))
        return result
    receipt, card = value["receipt"], value["card"]
    cid, rid = card["customer_id"], receipt["receipt_id"]
    if key != cid:
        result.rejects.append(Reject("key_mismatch", "identified receipt not keyed by customer"))
        return result
    rt_key = f"rt|{cid}|{rid}"
    stored_total = state.get(rt_key)
    if stored_total is not None:
        result.events["duplicate"] += 1
        _reemit(ctx, state, cid, rid, stored_total, result)
        return result
    erased = state.get(erased_key(cid))
    if erased is not None and receipt["purchased_at"] <= erased["erased_at"]:
        # A purchase made before the person was erased, delivered after it: storing anything
        # about the person would undo the erasure, but the household's Bonus must not lose
        # it (the ledger keeps household-level figures and drops redeliveries by receipt id).
        result.events["erased_customer"] += 1
        result.emits.append(
            Emit("receipts.totals", card["household_id"], _total_record(receipt, card))
        )
        return result

    held = state.get(consent_rules.key(cid))
    t = receipt["purchased_at"]
    product_level = ctx.rules.is_product_level(receipt["chain"])
    lines = receipt["lines"] if product_level else []
    n = len(lines)
    okey = output_key(cid, rid)

    # Product-level personal store (purchaser only).
    # Lines of total-only chains were dropped (and counted) in stage 1, so n == 0 there.
    reason = consent_rules.decide(held, "product_level_services", t)
    result.routed[("personal", reason)] += n
    if product_level and reason == consent_rules.ALLOWED and n:
        products = [ctx.catalog(line["gtin"]) for line in lines]
        record = {
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
        state.set(f"pl|{cid}|{rid}", record)
        result.emits.append(Emit("personal.line_items", okey, record))
        _count(ctx, state, cid, rid, t, lines, products, result)

    # Marketing signals: nothing finer than product groups, and only with consent.
    reason = consent_rules.decide(held, "marketing_targeting", t)
    result.routed[("marketing", reason)] += n
    if product_level and reason == consent_rules.ALLOWED and n:
        signal = {
            "customer_id": cid,
            "receipt_id": rid,
            "purchased_at": t,
            "month": ctx.rules.local_month(t),
            "groups": group_totals(ctx, lines),
        }
        state.set(f"ms|{cid}|{rid}", signal)
        result.emits.append(Emit("marketing.signals", okey, signal))

    # E-receipt archive: the whole receipt as stored (total-only chains: no lines).
    reason = consent_rules.decide(held, "e_receipts", t)
    result.routed[("ereceipt", reason)] += n
    if reason == consent_rules.ALLOWED:
        archived = {"customer_id": cid, "receipt": {**receipt, "lines": lines}}
        state.set(f"er|{cid}|{rid}", archived)
        result.emits.append(Emit("ereceipts.archive", okey, archived))

    # Recall index: legal duty, whatever the consent; product-level chains only.
    if product_level and n:
        state.set(
            recall_key(ctx.rules.local_date(t), cid, rid),
            {
                "card_number": card["card_number"],
                "customer_id": cid,
                "receipt_id": rid,
                "purchased_at": t,
                "gtins": sorted({line["gtin"] for line in lines}),
            },
        )
        result.routed[("recall", consent_rules.ALLOWED)] += n

    _index_for_expiry(state, ctx.rules.local_date(t), cid, rid)
    # The total record, last: it is the dedupe mark (see module docstring).
    total = _total_record(receipt, card)
    state.set(rt_key, total)
    result.emits.append(Emit("receipts.totals", card["household_id"], total))
    result.events["routed"] += 1
    return result


def _total_record(receipt: dict[str, Any], card: dict[str, Any]) -> dict[str, Any]:
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
    lines: list[dict[str, Any]],
    products: list[dict[str, Any] | None],
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
    ctx: Context, state: State, cid: str, rid: str, total: dict[str, Any], result: StepResult
) -> None:
    okey = output_key(cid, rid)
    for prefix, (topic, _purpose, _flag) in GATED.items():
        stored = state.get(f"{prefix}|{cid}|{rid}")
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


# --- retention ---------------------------------------------------------------------------

RETENTION_DONE_KEY = "meta|retention_done"  # {store: every record before this date purged}
RETENTION_SWEEP_KEY = "meta|retention_sweep_at"
EXPIRY_LOW_KEY = "meta|expiry_low"  # earliest date with an ``exp|`` index entry
# store prefix -> retention store name (topologies.rules.RETENTION_STORES)
RETAINED = {
    "pl": "personal_line_items",
    "ms": "marketing_signals",
    "er": "ereceipts",
    "rt": "receipt_totals",
}


def expiry_key(date: str, customer_id: str, receipt_id: str) -> str:
    return f"exp|{date}|{customer_id}|{receipt_id}"


def _index_for_expiry(state: State, date: str, cid: str, rid: str) -> None:
    state.set(expiry_key(date, cid, rid), 1)
    low = state.get(EXPIRY_LOW_KEY)
    if low is None or date < low:
        state.set(EXPIRY_LOW_KEY, date)


def tick(ctx: Context, state: State) -> StepResult:
    """Time-driven work: the retention purge, every ``retention.sweep_interval_minutes``
    (on a fixed grid of the processing clock, so a redone tick lands on the same slot)."""
    result = StepResult()
    run_on_grid(
        ctx,
        state,
        RETENTION_SWEEP_KEY,
        ctx.rules.retention_sweep_interval_ms,
        lambda: purge_expired(ctx, state, result),
    )
    return result


def purge_expired(ctx: Context, state: State, result: StepResult) -> dict[str, int]:
    """Delete every record older than its store's retention (docs/domain.md §7), by Helsinki
    purchase date, and send a tombstone for each record of a compacted output topic.

    The work is bounded by what expires: each receipt has an ``exp|<date>|...`` index entry,
    and each store remembers up to which date it has been purged (``meta|retention_done``),
    so a sweep reads only the index of the dates that became due since the last one. Counters
    go by whole months (a month wholly before the cutoff). The receipt total (the dedupe
    mark) has the purchase-data period: a redelivery two years late cannot occur (the input
    topics keep days).
    """
    rules = ctx.rules
    low = state.get(EXPIRY_LOW_KEY)
    done: dict[str, str] = dict(state.get(RETENTION_DONE_KEY) or {})
    counts: dict[str, int] = {}
    cutoffs = {
        store: rules.local_date(ctx.now_ms - rules.keep_ms(store))
        for store in (*RETAINED.values(), "counters", "recall_index")
    }
    cutoffs["counters"] = cutoffs["counters"][:8] + "01"  # whole months only
    for store, cutoff in cutoffs.items():
        start = done.get(store) or low
        n = 0
        if start is not None:
            for day in _dates(start, cutoff):
                n += _purge_day(ctx, state, store, day, result)
        counts[store] = n
        if start is not None and (done.get(store) or "") < cutoff:
            done[store] = cutoff
    # Index entries no store needs any more (every store purged past their date).
    index_done = min(done.get(store, "") for store in (*RETAINED.values(), "counters"))
    if low is not None and index_done > low:
        for day in _dates(low, index_done):
            for skey, _ in list(state.items(f"exp|{day}|")):
                state.delete(skey)
        state.set(EXPIRY_LOW_KEY, index_done)
    if done:
        state.set(RETENTION_DONE_KEY, done)
    deleted = sum(counts.values())
    result.events["retention_deleted"] += deleted
    if deleted:
        result.emits.append(_audit(ctx, "retention_purge", None, "retention", counts))
    return counts


def _purge_day(ctx: Context, state: State, store: str, day: str, result: StepResult) -> int:
    n = 0
    if store == "recall_index":
        for skey, _ in list(state.items(f"rc|{day}|")):
            state.delete(skey)
            n += 1
        return n
    for skey, _ in list(state.items(f"exp|{day}|")):
        _, _, cid, rid = skey.split("|", 3)
        if store == "counters":
            n += _purge_counter_month(ctx, state, cid, day[:7], result)
            continue
        prefix = next(p for p, s in RETAINED.items() if s == store)
        if state.get(f"{prefix}|{cid}|{rid}") is None:
            continue
        state.delete(f"{prefix}|{cid}|{rid}")
        if prefix in GATED:
            result.emits.append(Emit(GATED[prefix][0], output_key(cid, rid), None))
        n += 1
    return n


def _purge_counter_month(
    ctx: Context, state: State, cid: str, month: str, result: StepResult
) -> int:
    """A month's counters wholly outside retention: deleted, with a removal record."""
    if state.get(counter_key(cid, month)) is None:
        return 0  # another receipt of the month already removed it
    state.delete(counter_key(cid, month))
    result.emits.append(Emit(COUNTERS_TOPIC, cid, counters.removal_record(cid, month, ctx.now_ms)))
    return 1


def _dates(start: str, end: str) -> list[str]:
    """Dates from ``start`` (inclusive) to ``end`` (exclusive), YYYY-MM-DD."""
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days)]


# --- consents ----------------------------------------------------------------------------


def _on_consent(
    ctx: Context, state: State, key: str | None, value: dict[str, Any] | None
) -> StepResult:
    result = StepResult()
    if key is None:
        result.rejects.append(Reject("missing_key", "customer.consents record without a key"))
        return result
    if "|" in key:
        result.rejects.append(Reject("bad_identifier", "customer_id must not contain '|'"))
        return result
    if value is None:
        erase(ctx, state, key, result)
        return result
    if value["customer_id"] != key:
        result.rejects.append(Reject("key_mismatch", "record key is not the record's customer_id"))
        return result
    held = state.get(consent_rules.key(key))
    erased = state.get(erased_key(key))
    if held is None and erased is not None and value["version"] <= erased["version"]:
        # An old record redelivered after the erasure must not bring the person back.
        result.events["stale_consent"] += 1
        return result
    new, revoked = consent_rules.apply(held, value)
    if new is None:
        result.events["stale_consent"] += 1
        return result
    # The purges first, the new consent last: a crash keeps a prefix of these writes, and
    # while the old consent is still held the redelivered record is not stale, so it
    # revokes (and purges) again. Written the other way round, a crash after the consent
    # write would leave line items in a store that is closed, with nothing to finish it.
    for flag in revoked:
        prefix = FLAG_STORE.get(flag)
        if prefix is None:
            continue  # flags with no store of ours (external audiences, direct marketing)
        deleted = _purge(state, prefix, key, result)
        result.events[f"purge_{GATED[prefix][1]}"] += 1
        detail: dict[str, Any] = {"store": GATED[prefix][0], "deleted": deleted}
        if prefix == "pl":
            # The counters are made of the product-level line items: they go with them.
            detail[COUNTERS_TOPIC] = _purge_counters(ctx, state, key, result)
        result.emits.append(_audit(ctx, "revocation_purge", key, flag, detail))
    state.set(consent_rules.key(key), new)
    result.events["consent_updated"] += 1
    return result


def _purge(state: State, prefix: str, cid: str, result: StepResult) -> int:
    topic = GATED[prefix][0]
    deleted = 0
    for skey, _ in list(state.items(f"{prefix}|{cid}|")):
        state.delete(skey)
        rid = skey[len(prefix) + len(cid) + 2 :]
        result.emits.append(Emit(topic, output_key(cid, rid), None))
        deleted += 1
    return deleted


def _purge_counters(ctx: Context, state: State, cid: str, result: StepResult) -> int:
    """Delete every month's counters of the person; one removal record per month deleted.

    ``smobiili.counters`` is keyed by customer with the month in the value (not compacted),
    so a null value could not say which month went: the removal is an explicit record.
    """
    deleted = 0
    prefix = f"cn|{cid}|"
    for skey, _ in list(state.items(prefix)):
        state.delete(skey)
        month = skey[len(prefix) :]
        result.emits.append(
            Emit(COUNTERS_TOPIC, cid, counters.removal_record(cid, month, ctx.now_ms))
        )
        deleted += 1
    return deleted


def erase(ctx: Context, state: State, cid: str, result: StepResult) -> None:
    """Consent tombstone: the person is erased from every store of this stage.

    Receipt totals already sent to the household Bonus ledger stay there at household level
    (``receipts.totals`` is an event stream; the ledger keeps what the Bonus needs).
    """
    previous = state.get(erased_key(cid))
    counts: dict[str, int] = {}
    for prefix in GATED:
        counts[GATED[prefix][0]] = _purge(state, prefix, cid, result)
    counts[COUNTERS_TOPIC] = _purge_counters(ctx, state, cid, result)
    recall_entries = totals = 0
    for skey, total in list(state.items(f"rt|{cid}|")):
        day = ctx.rules.local_date(total["purchased_at"])
        state.delete(expiry_key(day, cid, total["receipt_id"]))
        rkey = recall_key(day, cid, total["receipt_id"])
        if state.get(rkey) is not None:
            state.delete(rkey)
            recall_entries += 1
        state.delete(skey)
        totals += 1
    counts["recall_index"] = recall_entries
    counts["receipt_totals"] = totals
    links = list(state.items(f"reg|{cid}|"))
    for rkey, _ in links:
        state.delete(rkey)
    counts["card_links"] = len(links)
    held = state.get(consent_rules.key(cid))
    if (
        previous is not None
        and previous["erased_at"] == ctx.now_ms
        and held is None
        and not any(counts.values())
    ):
        # The same tombstone again (a redelivery after a crash) with nothing held since:
        # erased and audited already. A timestamp alone does not make a redelivery: a second
        # tombstone at the same broker time after a new consent must still erase (fuzz find).
        result.events["duplicate"] += 1
        return
    state.delete(consent_rules.key(cid))
    # Suppression marker: the only thing kept, so that redeliveries of older consent
    # versions or of receipts bought before the erasure cannot recreate the person.
    version = max(held["version"] if held else -1, previous["version"] if previous else -1)
    state.set(erased_key(cid), {"erased_at": ctx.now_ms, "version": version})
    result.events["erasure"] += 1
    result.emits.append(_audit(ctx, "erasure", cid, "customer_erased", counts))


def _audit(
    ctx: Context, action: str, cid: str | None, purpose: str, detail: dict[str, Any]
) -> Emit:
    return audit_emit(ctx.now_ms, ACTOR, action, cid, purpose, detail)
