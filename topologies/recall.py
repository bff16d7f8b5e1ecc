"""Product recalls: the recall run over the recall index (``rc|<date>|<customer>|<receipt>``).

The recall index is a legal duty (product safety), kept whatever the person's consent
choices, for ``retention.recall_index_days`` (docs/domain.md §7). Its other reader is the
person's register extract, which lists their own entries (docs/domain.md §3.6, §7).

A recall run is a record on ``recall.requests`` sent to *every* partition (the index is
partitioned by customer); in each partition the personal-routing stage reads the index for
the dates of the window and emits one notification per customer who bought the GTIN on
``recall.notifications`` (key ``<recall id>/<customer id>``, so a redelivered request
overwrites the same keys) and audit records: one per customer found (whose data was read)
and one summary for the partition.

Nothing here changes state: a run can be repeated and reads the same index.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from topologies.context import Context
from topologies.personal_stores import RecallEntry
from topologies.record_types import RecallNotification, RecallRequest
from topologies.records import Emit, Reject, StepResult, audit_emit
from topologies.state import State

INPUT = "recall.requests"
OUTPUT = "recall.notifications"
MAX_WINDOW_DAYS = 731


def window(from_date: str, to_date: str) -> list[str]:
    """The Helsinki dates of a recall window, inclusive; ValueError if it is not valid."""
    start, end = date.fromisoformat(from_date), date.fromisoformat(to_date)
    if end < start:
        raise ValueError("recall window ends before it starts")
    days = (end - start).days + 1
    if days > MAX_WINDOW_DAYS:
        raise ValueError(f"recall window longer than {MAX_WINDOW_DAYS} days")
    return [(start + timedelta(days=i)).isoformat() for i in range(days)]


def step(ctx: Context, state: State, key: str | None, value: RecallRequest | None) -> StepResult:
    """Run a recall over this partition's index: notifications and audit records."""
    result = StepResult()
    if value is None:
        result.rejects.append(Reject("missing_value", "recall request without a value"))
        return result
    gtin = value["gtin"]
    try:
        dates = window(value["from_date"], value["to_date"])
    except ValueError as exc:
        result.rejects.append(Reject("bad_recall_window", str(exc)))
        return result
    found: dict[str, RecallNotification] = {}
    for day in dates:
        for _k, stored in state.items(f"rc|{day}|"):
            entry: RecallEntry = stored
            if gtin not in entry["gtins"]:
                continue
            cid = entry["customer_id"]
            hit = found.get(cid)
            if hit is None:
                hit = found[cid] = {
                    "recall_id": value["recall_id"],
                    "gtin": gtin,
                    "customer_id": cid,
                    "card_numbers": [],
                    "receipts": [],
                    "reason": value["reason"],
                    "requested_at": value["requested_at"],
                }
            if entry["card_number"] not in hit["card_numbers"]:
                hit["card_numbers"].append(entry["card_number"])
            hit["receipts"].append(
                {"receipt_id": entry["receipt_id"], "purchased_at": entry["purchased_at"]}
            )
    actor = value["requested_by"]
    for cid in sorted(found):
        hit = found[cid]
        hit["card_numbers"].sort()
        hit["receipts"].sort(key=lambda r: (r["purchased_at"], r["receipt_id"]))
        result.emits.append(Emit(OUTPUT, f"{value['recall_id']}/{cid}", hit))
        result.emits.append(
            _audit(ctx, actor, cid, {"recall_id": value["recall_id"], "gtin": gtin})
        )
    summary = {
        "recall_id": value["recall_id"],
        "gtin": gtin,
        "from_date": value["from_date"],
        "to_date": value["to_date"],
        "reason": value["reason"],
        "partition": ctx.partition,
        "customers": len(found),
        "receipts": sum(len(h["receipts"]) for h in found.values()),
    }
    result.emits.append(_audit(ctx, actor, None, summary))
    result.events["recall_run"] += 1
    result.events["recall_notifications"] += len(found)
    return result


def _audit(ctx: Context, actor: str, subject: str | None, detail: dict[str, Any]) -> Emit:
    return audit_emit(ctx.now_ms, actor, "recall", subject, "product_recall", detail)
