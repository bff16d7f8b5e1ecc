"""What batched state would buy: one RocksDB write batch, and one changelog record per key,
per processed batch (issue 19, "Batched state").

Both are measured on the stage code's own writes rather than argued: ``replay``'s Driver runs
the workload with recording states, so every ``set``/``delete`` is captured with its stage and
the worker batch it would fall in (a stage's receipt-path input records -- not the
registers' -- counted in batches of
``stream.engine.packing.BATCH_MAX``, the most the worker's ``take_events`` hands over at once,
i.e. the best case for batching). Then:

- **write batches**: the captured writes are applied to a fresh rocksdict database with the
  worker's options (no WAL), once with one ``put``/``delete`` each (what the worker does) and
  once with one ``WriteBatch`` per stage batch; the difference per receipt is what a write
  batch per processed batch would save of the state cost;
- **one changelog record per key per batch**: the captured writes per stage batch against the
  distinct keys they touch; the difference is the changelog records (and their sends) the
  last-value-per-key rule would save per receipt.

Neither is built: docs/architecture.md ("Why not one changelog record per key per batch")
says why the second would break the exactly-once argument without transactions, and the
figures here say how much either is worth.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Rdict, WriteBatch

from benchmarks.common import Workload, fmt, header, log, row
from stream.engine.packing import BATCH_MAX
from stream.engine.runner import RawRecord
from stream.engine.state import no_wal, rocks_options
from stream.settings import load_rules
from stream.tools.replay import Driver
from topologies.pipeline import Stage
from topologies.state import MemoryState, State

# One captured write: (stage, batch number, key bytes, value bytes or None for a delete).
Write = tuple[str, int, bytes, bytes | None]
# Inputs that are the registers, not receipts: their writes are the register load.
REGISTER_TOPICS = frozenset(
    {
        "product.catalog",
        "customer.cards",
        "customer.consents",
        "register.people",
        "register.households",
        "recall.requests",
    }
)


class _Recording(MemoryState):
    """A memory state that also appends each write, tagged with its stage batch, to ``log``."""

    def __init__(self, stage: str, batch_of: dict[str, int], log: list[Write]) -> None:
        super().__init__()
        self._stage = stage
        self._batch_of = batch_of
        self._log = log

    def set(self, key: str, value: Any) -> None:
        super().set(key, value)
        self._log.append(
            (self._stage, self._batch_of[self._stage], key.encode(), orjson.dumps(value))
        )

    def delete(self, key: str) -> None:
        super().delete(key)
        self._log.append((self._stage, self._batch_of[self._stage], key.encode(), None))


def capture(w: Workload, batch: int = BATCH_MAX) -> list[Write]:
    """Every state write the stage code makes for ``w``, tagged with its worker batch."""
    driver = Driver(load_rules(), None, codec=w.codec)
    writes: list[Write] = []
    seen: Counter[str] = Counter()
    batch_of: dict[str, int] = defaultdict(int)
    for name in list(driver.states):
        driver.states[name] = _Recording(name, batch_of, writes)
    driver.catalog._state = driver.states["catalog"]  # noqa: SLF001 - the catalogue reads them
    process = driver.runner.process

    def counted(stage: Stage, state: State, rec: RawRecord) -> Any:
        if rec.topic in REGISTER_TOPICS:
            batch_of[stage.name] = -1  # the register load: left out below
            return process(stage, state, rec)
        batch_of[stage.name] = seen[stage.name] // batch
        seen[stage.name] += 1
        return process(stage, state, rec)

    driver.runner.process = counted  # type: ignore[method-assign]
    for topic, key, value, ts in w.encoded:
        driver.feed(topic, key, value, ts)
    return writes


def _apply(path: Path, writes: list[Write], batched: bool) -> float:
    """CPU seconds to apply ``writes`` to a fresh database, one by one or per stage batch."""
    db = Rdict(str(path), options=rocks_options())
    db.set_write_options(no_wal())
    try:
        t0 = time.process_time()
        if not batched:
            for _s, _b, k, v in writes:
                if v is None:
                    db.delete(k)
                else:
                    db.put(k, v)
        else:
            current: tuple[str, int] | None = None
            wb = WriteBatch(raw_mode=True)
            for s, b, k, v in writes:
                if (s, b) != current:
                    if current is not None:
                        db.write(wb)
                        wb = WriteBatch(raw_mode=True)
                    current = (s, b)
                if v is None:
                    wb.delete(k)
                else:
                    wb.put(k, v)
            db.write(wb)
        return time.process_time() - t0
    finally:
        db.close()


def run(w: Workload, batch: int = BATCH_MAX, repeats: int = 3) -> dict[str, Any]:
    log(f"batched state: capturing the stage code's writes for {w.n_receipts:,} receipts")
    writes = capture(w, batch)
    # The registers' writes (cards, consents, catalogue) are not receipt work: left out.
    writes = [x for x in writes if x[1] >= 0]
    n = w.n_receipts
    per_key: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    groups: dict[tuple[str, int], set[bytes]] = defaultdict(set)
    for s, b, k, _v in writes:
        per_key[s][0] += 1
        groups[(s, b)].add(k)
    for (s, _b), keys in groups.items():
        per_key[s][1] += len(keys)
    total = sum(v[0] for v in per_key.values())
    distinct = sum(v[1] for v in per_key.values())
    root = Path(tempfile.mkdtemp(prefix="bench-batched-"))
    one, batched = [], []
    try:
        for i in range(repeats):  # interleaved, best of each: the VM's speed moves
            one.append(_apply(root / f"one-{i}", writes, batched=False))
            batched.append(_apply(root / f"batch-{i}", writes, batched=True))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    us_one = min(one) / n * 1e6
    us_batched = min(batched) / n * 1e6
    out = {
        "receipts": n,
        "batch_records": batch,
        "state_writes_per_receipt": round(total / n, 2),
        "write_us_per_receipt_one_by_one": round(us_one, 2),
        "write_us_per_receipt_write_batch": round(us_batched, 2),
        "write_batch_saves_us_per_receipt": round(us_one - us_batched, 2),
        "changelog_records_per_receipt": round(total / n, 2),
        "changelog_records_per_receipt_last_per_key": round(distinct / n, 2),
        "changelog_records_saved_per_receipt": round((total - distinct) / n, 2),
        "per_stage": {
            s: {
                "writes_per_receipt": round(v[0] / n, 3),
                "last_per_key_per_receipt": round(v[1] / n, 3),
            }
            for s, v in sorted(per_key.items())
        },
    }
    header(f"batched state (stage batches of {batch} records)", "per receipt", "", "")
    row("state writes (= changelog records) per receipt", f"{out['state_writes_per_receipt']:.2f}")
    row("RocksDB writes one by one, CPU µs", fmt(us_one, 2))
    row("one WriteBatch per stage batch, CPU µs", fmt(us_batched, 2))
    row(
        "changelog records, one per key per batch",
        f"{out['changelog_records_per_receipt_last_per_key']:.2f}",
    )
    for s, v in out["per_stage"].items():
        row(
            f"  {s}: writes / last per key",
            f"{v['writes_per_receipt']:.2f} / {v['last_per_key_per_receipt']:.2f}",
        )
    return out
