"""Figure 1, the ceiling: bare fastavro decode, and decode + encode, of the same receipts."""

from __future__ import annotations

import io
from typing import Any

import fastavro

from benchmarks.common import Timing, Workload, fmt, header, rates, row, timed
from stream.schemas import schema as parsed_schema


def _best_of(n: int, fn: Any) -> Timing:
    runs = [timed(fn) for _ in range(n)]
    return min(runs, key=lambda t: t.wall_s)


def run(w: Workload) -> dict[str, Any]:
    schema = parsed_schema("fi.coop.purchase.Receipt")
    bodies = w.receipt_bodies

    def decode_all() -> None:
        for b in bodies:
            fastavro.schemaless_reader(io.BytesIO(b), schema, None)

    def decode_encode_all() -> None:
        for b in bodies:
            r = fastavro.schemaless_reader(io.BytesIO(b), schema, None)
            fastavro.schemaless_writer(io.BytesIO(), schema, r)

    header(
        "ceiling: bare fastavro on the same receipts", "receipts/s", "line items/s", "rcpt/CPU-s"
    )
    out: dict[str, Any] = {"receipts": w.n_receipts, "line_items": w.line_items}
    for name, fn in (("decode", decode_all), ("decode_encode", decode_encode_all)):
        r = rates(w.n_receipts, w.line_items, _best_of(3, fn))
        out[name] = r
        row(
            f"fastavro {name.replace('_', ' + ')} (best of 3)",
            fmt(r["receipts_per_s"]),
            fmt(r["line_items_per_s"]),
            fmt(r["receipts_per_cpu_s"]),
        )
    return out
