"""Figure 2, the topology core: ``replay``'s Driver over pre-encoded records, RocksDB state.

Driver.feed() is the worker's code path without a broker: Avro decode, card join, consent
routing, S-mobiili counters, group aggregates, the household Bonus ledger, every output
Avro-encoded, state in rocksdict. The ceiling is measured just before, on the same receipts.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import ceiling
from benchmarks.common import Workload, dir_bytes, fmt, header, log, rates, row, timed
from stream.settings import load_rules
from stream.tools.replay import Driver


def run(w: Workload) -> dict[str, Any]:
    ceil = ceiling.run(w)
    rules = load_rules()
    state_dir = Path(tempfile.mkdtemp(prefix="bench-core-"))
    try:
        driver = Driver(rules, state_dir / "core", codec=w.codec)
        n = len(w.encoded)
        step = max(n // 10, 1)

        def feed_all() -> None:
            for i, (topic, key, value, ts) in enumerate(w.encoded):
                driver.feed(topic, key, value, ts)
                if i and i % step == 0:
                    log(f"core: {i:,}/{n:,} events")

        log(f"core: replaying {n:,} events ({w.n_receipts:,} receipts)")
        t = timed(feed_all)
        outputs = dict(driver.summary.records_out)
        driver.close()
        rocks = dir_bytes(state_dir / "core")
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    core = rates(w.n_receipts, w.line_items, t)
    de = ceil["decode_encode"]
    out = {
        "ceiling": ceil,
        "core": core,
        "ratio_core_to_decode_encode": round(core["receipts_per_s"] / de["receipts_per_s"], 4),
        "ratio_core_to_decode_encode_cpu": round(
            core["receipts_per_cpu_s"] / de["receipts_per_cpu_s"], 4
        ),
        "ratio_core_to_decode": round(core["receipts_per_s"] / ceil["decode"]["receipts_per_s"], 4),
        "rocksdb_bytes": rocks,
        "outputs": outputs,
    }
    header(
        "topology core: replay Driver, RocksDB state", "receipts/s", "line items/s", "rcpt/CPU-s"
    )
    row(
        f"replay core ({w.n_receipts:,} receipts)",
        fmt(core["receipts_per_s"]),
        fmt(core["line_items_per_s"]),
        fmt(core["receipts_per_cpu_s"]),
    )
    row(
        "core / fastavro decode+encode (target >= 0.20)",
        f"{out['ratio_core_to_decode_encode']:.3f}",
    )
    row("  same, per CPU-second", f"{out['ratio_core_to_decode_encode_cpu']:.3f}")
    row("core / fastavro decode", f"{out['ratio_core_to_decode']:.3f}")
    row("RocksDB state on disk (MB)", fmt(rocks / 1e6, 1))
    return out
