"""Revocation and erasure in the personal stores (docs/domain.md §2-3, §7).

A consent record that switches a flag off purges the flag's store of the person (and, for
``product_level_services``, the S-mobiili counters made of it); a consent tombstone erases the
person from every store of the stage and leaves only a suppression marker (``erased|``), so
that redeliveries of older consent versions or of receipts bought before the erasure cannot
recreate the person.
"""

from __future__ import annotations

from typing import Any

from topologies import consent as consent_rules
from topologies import counters
from topologies.context import Context
from topologies.personal_stores import (
    COUNTERS,
    COUNTERS_TOPIC,
    FLAG_STORE,
    GATED,
    RECEIPT_TOTALS,
    Erased,
    audit,
    customer_prefix,
    erased_key,
    expiry_key,
    output_key,
    recall_key,
)
from topologies.record_types import Consent, ReceiptTotal
from topologies.records import Emit, Reject, StepResult
from topologies.state import State


def on_consent(ctx: Context, state: State, key: str | None, value: Consent | None) -> StepResult:
    """A consent record (revoked flags purge their stores first) or a tombstone (erasure)."""
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
    held: consent_rules.ConsentState | None = state.get(consent_rules.key(key))
    erased: Erased | None = state.get(erased_key(key))
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
        result.emits.append(audit(ctx, "revocation_purge", key, flag, detail))
    state.set(consent_rules.key(key), new)
    result.events["consent_updated"] += 1
    return result


def _purge(state: State, prefix: str, cid: str, result: StepResult) -> int:
    topic = GATED[prefix][0]
    deleted = 0
    for skey, _ in list(state.items(customer_prefix(prefix, cid))):
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
    prefix = customer_prefix(COUNTERS, cid)
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
    previous: Erased | None = state.get(erased_key(cid))
    counts: dict[str, int] = {}
    for prefix in GATED:
        counts[GATED[prefix][0]] = _purge(state, prefix, cid, result)
    counts[COUNTERS_TOPIC] = _purge_counters(ctx, state, cid, result)
    recall_entries = totals = 0
    for skey, stored in list(state.items(customer_prefix(RECEIPT_TOTALS, cid))):
        total: ReceiptTotal = stored
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
    held: consent_rules.ConsentState | None = state.get(consent_rules.key(cid))
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
    marker: Erased = {"erased_at": ctx.now_ms, "version": version}
    state.set(erased_key(cid), marker)
    result.events["erasure"] += 1
    result.emits.append(audit(ctx, "erasure", cid, "customer_erased", counts))
