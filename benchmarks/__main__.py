"""``python -m benchmarks``: replay throughput beside the bare fastavro ceiling, same records.

Every figure is measured in the same run on the same simulated receipts, so ratios are
comparable even on a noisy machine. Prints a table and writes benchmarks/results/latest.json.

Figures:
- ``fastavro decode``: schemaless_reader over the receipt bodies (what any consumer pays).
- ``fastavro decode+encode``: the ceiling of a consume-transform-produce of the receipt.
- ``replay core``: Driver.feed() of pre-encoded records (the worker's code path: decode,
  card join, consent routing, group aggregates, encoding every output; RocksDB state).
- ``replay file``: ``purchase-stream replay`` on the JSONL file (adds JSON parsing and the
  Avro validation of every input line).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fastavro
import orjson

from stream.codec import Codec
from stream.replay import Driver, encode_event, replay_file
from stream.schema_registry import InMemoryRegistry
from stream.schemas import schema as parsed_schema
from stream.settings import load_rules
from stream.simulator import SimConfig, generate

RESULTS = Path(__file__).resolve().parent / "results"


def _best_of(n: int, fn: Any) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(receipts: int, households: int, seed: int) -> dict[str, Any]:
    rules = load_rules()
    t0 = time.perf_counter()
    events = list(generate(SimConfig(seed=seed, households=households, receipts=receipts)))
    gen_s = time.perf_counter() - t0
    n_receipt_events = sum(1 for e in events if e["topic"] == "pos.receipts")
    print(
        f"simulated {len(events):,} events ({n_receipt_events:,} receipt deliveries) "
        f"in {gen_s:.1f} s",
        file=sys.stderr,
    )

    codec = Codec(InMemoryRegistry())
    encoded = []
    bad = 0
    for e in events:
        try:
            encoded.append(encode_event(codec, e))
        except Exception:  # noqa: BLE001 - the simulator's deliberately broken lines
            bad += 1
    bodies = [v[5:] for (t, _k, v, _ts) in encoded if t == "pos.receipts" and v]
    lines_total = 0
    schema = parsed_schema("fi.coop.purchase.Receipt")
    decoded = []
    for b in bodies:
        r = fastavro.schemaless_reader(io.BytesIO(b), schema, schema)
        decoded.append(r)
        lines_total += len(r["lines"])  # type: ignore[index,arg-type]
    n = len(bodies)
    print(
        f"{n:,} receipt records, {lines_total:,} line items ({lines_total / n:.1f} per receipt)",
        file=sys.stderr,
    )

    def decode_all() -> None:
        for b in bodies:
            fastavro.schemaless_reader(io.BytesIO(b), schema, schema)

    def decode_encode_all() -> None:
        for b in bodies:
            r = fastavro.schemaless_reader(io.BytesIO(b), schema, schema)
            out = io.BytesIO()
            fastavro.schemaless_writer(out, schema, r)

    decode_s = _best_of(3, decode_all)
    roundtrip_s = _best_of(3, decode_encode_all)

    state_dir = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        driver = Driver(rules, state_dir / "core", codec=codec)
        t0 = time.perf_counter()
        for topic, key, value, ts in encoded:
            driver.feed(topic, key, value, ts)
        core_s = time.perf_counter() - t0
        out_counts = dict(driver.summary.records_out)
        driver.close()

        jsonl = state_dir / "events.jsonl"
        with open(jsonl, "wb") as f:
            for e in events:
                f.write(orjson.dumps(e) + b"\n")
        summary = replay_file(jsonl, rules, state_dir / "file")
        file_s = summary.elapsed_s
        rocks_bytes = sum(p.stat().st_size for p in (state_dir / "core").rglob("*") if p.is_file())
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)

    def rates(seconds: float) -> dict[str, float]:
        return {
            "seconds": round(seconds, 3),
            "receipts_per_s": round(n / seconds, 1),
            "line_items_per_s": round(lines_total / seconds, 1),
        }

    result = {
        "benchmark": "replay_vs_fastavro",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "receipts": n,
        "line_items": lines_total,
        "events": len(events),
        "fastavro_decode": rates(decode_s),
        "fastavro_decode_encode": rates(roundtrip_s),
        "replay_core": rates(core_s),
        "replay_file": rates(file_s),
        "ratio_core_to_decode": round(decode_s / core_s, 3),
        "ratio_core_to_decode_encode": round(roundtrip_s / core_s, 3),
        "ratio_file_to_decode": round(decode_s / file_s, 3),
        "rocksdb_bytes": rocks_bytes,
        "outputs": out_counts,
    }
    return result


def print_table(r: dict[str, Any]) -> None:
    print(
        f"\nreplay benchmark: {r['receipts']:,} receipts, {r['line_items']:,} line items "
        f"(Python {r['machine']['python']}, {r['machine']['cpus']} CPUs)"
    )
    print(f"{'figure':<28}{'receipts/s':>14}{'line items/s':>16}{'seconds':>10}")
    for name, label in (
        ("fastavro_decode", "fastavro decode (ceiling)"),
        ("fastavro_decode_encode", "fastavro decode+encode"),
        ("replay_core", "replay core (worker path)"),
        ("replay_file", "replay JSONL file"),
    ):
        x = r[name]
        print(
            f"{label:<28}{x['receipts_per_s']:>14,.0f}{x['line_items_per_s']:>16,.0f}"
            f"{x['seconds']:>10.2f}"
        )
    print(f"replay core / fastavro decode        = {r['ratio_core_to_decode']:.3f}")
    print(f"replay core / fastavro decode+encode = {r['ratio_core_to_decode_encode']:.3f}")
    print(f"replay file / fastavro decode        = {r['ratio_file_to_decode']:.3f}")
    print(f"RocksDB state after replay: {r['rocksdb_bytes'] / 1e6:.1f} MB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--receipts", type=int, default=100_000)
    ap.add_argument("--households", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    result = run(args.receipts, args.households, args.seed)
    print_table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
