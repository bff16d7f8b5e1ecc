"""The design changes of issue 19, each measured against the design before it, in this run.

Two changes are kept as switches, so that before and after run side by side, interleaved
(A B B A ...: a drift of the VM's speed within the run falls on both sides alike):

- **no RocksDB write-ahead log** (the changelogs are the durability; stream/engine/state.py,
  stream/engine/store_patches.py): the replay core over the same records with the WAL back
  on (the default ``WriteOptions``) and off, as the worker and ``replay`` run;
- **packed internal records** (identified receipts and contributions,
  stream/engine/packing.py): one Faust worker draining the same backlog on a fresh broker
  with ``pack_internal_topics`` off and on. The run also counts the records on
  ``receipts.identified`` and ``aggregates.contributions``: one per receipt unpacked, one
  per partition and batch packed.

The rest of the issue's design changes are measured elsewhere in the same ``make bench``:
batched state in ``benchmarks/batched_state.py``, the internal topics' JSON against the
compiled Avro codec in ``benchmarks/ceiling.py``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rocksdict import WriteOptions

from benchmarks import broker_bench
from benchmarks.common import Workload, fmt, header, log, rates, row, timed
from stream.engine.runner import PACKED_TOPICS
from stream.local.offsets import end_offsets
from stream.settings import load_rules
from stream.tools.replay import Driver


def _order(pairs: int) -> list[bool]:
    """``after`` flags in A B B A A B ... order."""
    out: list[bool] = []
    for i in range(pairs):
        out += [False, True] if i % 2 == 0 else [True, False]
    return out


def _compare(before: list[float], after: list[float]) -> dict[str, Any]:
    ratios = [a / b for b, a in zip(before, after, strict=True) if b]
    return {
        "before": [round(x, 1) for x in before],
        "after": [round(x, 1) for x in after],
        "before_mean": round(statistics.fmean(before), 1),
        "after_mean": round(statistics.fmean(after), 1),
        "ratio_mean": round(statistics.fmean(ratios), 3) if ratios else None,
        "ratio_min": round(min(ratios), 3) if ratios else None,
        "ratio_max": round(max(ratios), 3) if ratios else None,
    }


def core_wal(w: Workload, pairs: int) -> dict[str, Any]:
    """The replay core per CPU-second with RocksDB's WAL on (before) and off (after)."""
    rules = load_rules()
    # The register (catalogue, cards, consents) before the first receipt is loaded untimed:
    # the figure is per receipt.
    first = next(i for i, e in enumerate(w.encoded) if e[0] == "pos.receipts")
    register, stream = w.encoded[:first], w.encoded[first:]
    runs: dict[bool, list[float]] = {False: [], True: []}
    for after in _order(pairs):
        state_dir = Path(tempfile.mkdtemp(prefix="bench-design-"))
        try:
            driver = Driver(rules, state_dir / "core", codec=w.codec)
            if not after:
                # The design before: every put also appended to the WAL (default options).
                for st in driver.states.values():
                    st.db.set_write_options(WriteOptions())

            for topic, key, value, ts in register:
                driver.feed(topic, key, value, ts)

            def feed_all(driver: Driver = driver) -> None:
                for topic, key, value, ts in stream:
                    driver.feed(topic, key, value, ts)
                driver.close()  # without the WAL, close() flushes the memtables: timed too

            t = timed(feed_all)
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
        r = rates(w.n_receipts, w.line_items, t)
        runs[after].append(r["receipts_per_cpu_s"])
        log(f"design: replay core, WAL {'off' if after else 'on'}: {r['receipts_per_cpu_s']:,.0f}")
    out = _compare(runs[False], runs[True])
    out["receipts"] = w.n_receipts
    return out


def worker_packing(receipts: int, households: int, seed: int, pairs: int) -> dict[str, Any]:
    """One worker per CPU-second with internal records unpacked (before) and packed (after)."""
    register, rcpts = broker_bench.sim_events(receipts, households, seed)
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for i, after in enumerate(_order(pairs)):
        label = f"design-{'packed' if after else 'unpacked'}-{i}"
        env = broker_bench.Env(label)
        try:
            r = broker_bench.throughput(
                env,
                [f"bench-{label}"],
                register,
                rcpts,
                label,
                extra_env={"PURCHASE_STREAM_PACK_INTERNAL_TOPICS": "true" if after else "false"},
            )
            r["packed_topic_records"] = sum(
                sum(end_offsets(env.bootstrap, topic).values()) for topic in PACKED_TOPICS
            )
        finally:
            env.close()
        runs[after].append(r)
        log(
            f"design: one worker, {'packed' if after else 'unpacked'}: "
            f"{r['receipts_per_worker_cpu_s']:,.0f} per worker CPU-s, "
            f"{r['packed_topic_records']:,} records on the packed topics"
        )

    def figure(rs: list[dict[str, Any]], *path: str) -> list[float]:
        out = []
        for r in rs:
            v: Any = r
            for p in path:
                v = (v or {}).get(p)
            out.append(float(v or 0.0))
        return out

    return {
        "receipts": receipts,
        "drain": _compare(
            figure(runs[False], "receipts_per_worker_cpu_s"),
            figure(runs[True], "receipts_per_worker_cpu_s"),
        ),
        "steady": _compare(
            figure(runs[False], "steady", "receipts_per_worker_cpu_s"),
            figure(runs[True], "steady", "receipts_per_worker_cpu_s"),
        ),
        "broker_cpu_s": _compare(
            figure(runs[False], "broker_cpu_s"), figure(runs[True], "broker_cpu_s")
        ),
        "packed_topic_records": _compare(
            figure(runs[False], "packed_topic_records"),
            figure(runs[True], "packed_topic_records"),
        ),
    }


def run(
    core_workload: Workload, worker_receipts: int, households: int, seed: int, pairs: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"pairs": pairs, "order": "A B B A ... (A = before, B = after)"}
    header("design changes, before -> after in this run", "before", "after", "after/before")
    wal = out["no_wal_core"] = core_wal(core_workload, pairs)
    row(
        f"no RocksDB WAL: replay core, rcpt/CPU-s ({wal['receipts']:,} receipts)",
        fmt(wal["before_mean"]),
        fmt(wal["after_mean"]),
        f"{wal['ratio_mean']:.3f}",
    )
    pk = out["packed_internal"] = worker_packing(worker_receipts, households, seed, pairs)
    for label, key, digits in (
        ("packed internal records: one worker, rcpt/worker CPU-s, drain", "drain", 0),
        ("  same, steady state", "steady", 0),
        ("  broker CPU-s per run", "broker_cpu_s", 1),
        ("  records on the packed topics", "packed_topic_records", 0),
    ):
        c = pk[key]
        row(
            label,
            fmt(c["before_mean"], digits),
            fmt(c["after_mean"], digits),
            f"{c['ratio_mean']:.3f}" if c["ratio_mean"] is not None else "",
        )
    return out
