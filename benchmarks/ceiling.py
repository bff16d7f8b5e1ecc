"""Figure 1, the ceiling: bare fastavro decode, and decode + encode, of the same receipts."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import orjson

from benchmarks.common import Timing, Workload, fmt, header, rates, row, timed
from stream.serde.avro_compiled import compile_schema
from stream.serde.schemas import schema as parsed_schema


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

    # The codec the worker and replay use (stream/serde/avro_compiled.py), for comparison only:
    # the ceiling the targets refer to stays bare fastavro.
    compiled = compile_schema(schema)
    assert compiled is not None
    c_encode, c_decode = compiled

    def compiled_decode_all() -> None:
        for b in bodies:
            c_decode(b, 0)

    def compiled_decode_encode_all() -> None:
        for b in bodies:
            c_encode(c_decode(b, 0)[0], b"")

    # The internal topics' encoding (JSON, stream/serde/codec.py) on a receipts.identified
    # value (the receipt and its card link): what an internal hop pays to write and read it,
    # against the compiled Avro codec above (issue 19, "cheaper internal topics").
    card = {
        "card_number": "7000000000000000",
        "customer_id": "C000000000",
        "household_id": "HH00000000",
        "role": "MEMBER",
    }
    identified = [{"receipt": c_decode(b, 0)[0], "card": card} for b in bodies]

    def json_encode_decode_all() -> None:
        for v in identified:
            orjson.loads(orjson.dumps(v))

    header(
        "ceiling: bare fastavro on the same receipts", "receipts/s", "line items/s", "rcpt/CPU-s"
    )
    out: dict[str, Any] = {"receipts": w.n_receipts, "line_items": w.line_items}
    for name, fn in (
        ("decode", decode_all),
        ("decode_encode", decode_encode_all),
        ("compiled_decode", compiled_decode_all),
        ("compiled_decode_encode", compiled_decode_encode_all),
        ("json_identified_encode_decode", json_encode_decode_all),
    ):
        r = rates(w.n_receipts, w.line_items, _best_of(3, fn))
        out[name] = r
        what = name.replace("compiled_", "").replace("_", " + ")
        label = f"{'compiled codec' if 'compiled' in name else 'fastavro'} {what}"
        if name.startswith("json_"):
            label = "orjson encode + decode, receipts.identified value"
        row(
            f"{label} (best of 3)",
            fmt(r["receipts_per_s"]),
            fmt(r["line_items_per_s"]),
            fmt(r["receipts_per_cpu_s"]),
        )
    out["json_identified_bytes"] = round(
        sum(len(orjson.dumps(v)) for v in identified) / max(1, len(identified))
    )
    out["avro_receipt_bytes"] = round(sum(len(b) for b in bodies) / max(1, len(bodies)))
    return out
