"""Figure 5, scale of state: the card register and consents loaded into a worker's tables.

N cards (N customers, N consent records, N / 1.6 households: the national ratio of 4 M cards
to 2.5 M households) are produced to customer.cards and customer.consents; one worker loads
them (timed until lag 0). Then: the worker's resident memory, RocksDB bytes on disk (its
state directory), a fresh worker with an empty state directory restoring the tables from the
changelogs (timed until it has processed a probe receipt sent after its start), and random
point lookups on the restored RocksDB partitions (rocksdict, after the worker stops).

noida-db keeps every record in a JSON snapshot in memory (600k records ~ 468 MB), so the full
4 M + 4 M (+ 8 M changelog records) does not fit this machine; the default N is smaller and
the 4 M figures are extrapolated linearly (stated as such in the table and BENCHMARKS.md).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from benchmarks import broker_bench as bb
from benchmarks.common import dir_bytes, fmt, header, log, proc_rss_bytes, row

NATIONAL_CARDS = 4_000_000


def _register(n: int) -> list[tuple[str, bytes, dict[str, Any], int]]:
    rnd = random.Random(7)
    households = max(1, int(n / 1.6))
    ts = 1_735_689_600_000
    out: list[Any] = []
    for i in range(n):
        card = f"70006{i:011d}"
        cust = f"C{i:09d}"
        hh = f"HH{rnd.randrange(households):08d}"
        out.append(
            {
                "topic": "customer.cards",
                "key": card,
                "value": {
                    "card_number": card,
                    "customer_id": cust,
                    "household_id": hh,
                    "role": "MAIN_MEMBER" if i % 2 else "MEMBER",
                },
                "timestamp": ts,
            }
        )
        out.append(
            {
                "topic": "customer.consents",
                "key": cust,
                "value": {
                    "customer_id": cust,
                    "version": 1,
                    "effective_at": ts,
                    "product_level_services": rnd.random() < 0.6,
                    "marketing_targeting": rnd.random() < 0.3,
                    "external_audiences": False,
                    "direct_marketing": rnd.random() < 0.35,
                    "e_receipts": rnd.random() < 0.1,
                    "source": "S-mobiili",
                },
                "timestamp": ts,
            }
        )
    return out


def _lookups(state_dir: Path, samples: int = 100_000) -> dict[str, Any]:
    from rocksdict import AccessType, Rdict

    from stream.state import rocks_options

    dbs = [p for p in state_dir.rglob("*") if p.is_dir() and (p / "CURRENT").exists()]
    keys: list[tuple[int, bytes]] = []
    opened = []
    for i, p in enumerate(dbs):
        db = Rdict(str(p), options=rocks_options(), access_type=AccessType.read_only())
        opened.append(db)
        for k in db:
            keys.append((i, k))
    if not keys:
        return {"lookups_per_s": None, "keys": 0}
    rnd = random.Random(3)
    sample = [keys[rnd.randrange(len(keys))] for _ in range(samples)]
    t0 = time.perf_counter()
    for i, k in sample:
        opened[i].get(k)
    dt = time.perf_counter() - t0
    for db in opened:
        db.close()
    return {"lookups_per_s": round(samples / dt), "keys": len(keys), "databases": len(dbs)}


def run(cards: int) -> dict[str, Any]:
    header(
        f"scale of state: {cards:,} cards + consents",
        "measured",
        f"x{NATIONAL_CARDS // cards} (4M)",
    )
    env = bb.Env("state")
    try:
        events = _register(cards)
        log(f"state: producing {len(events):,} register records")
        enc = bb._encode(env.codec, events)
        env.produce(enc)
        t0 = time.monotonic()
        w = env.worker("bench-state")
        env.wait_idle("bench-state", timeout=3600, poll=2.0)
        load_s = time.monotonic() - t0
        assert w.proc is not None
        rss = proc_rss_bytes(w.proc.pid)
        w.stop()
        env.workers.remove(w)
        rocks = dir_bytes(env.tmp / "worker1")
        try:
            look = _lookups(env.tmp / "worker1")
        except Exception as exc:  # noqa: BLE001 - keep the other state figures
            look = {"lookups_per_s": None, "error": f"{type(exc).__name__}: {exc}"}
        log("state: fresh worker restoring from the changelogs")
        # The probe: a card record sent again (idempotent); the worker reaches it only after
        # its tables are restored, so lag 0 means restore + probe done.
        probe = events[:1]
        w2 = env.worker("bench-state")
        t1 = time.monotonic()
        time.sleep(1.0)
        env.produce(bb._encode(env.codec, probe))
        env.wait_idle("bench-state", timeout=3600, poll=1.0)
        restore_s = time.monotonic() - t1
        assert w2.proc is not None
        rss2 = proc_rss_bytes(w2.proc.pid)
    finally:
        env.close()
    k = NATIONAL_CARDS / cards
    out = {
        "cards": cards,
        "consents": cards,
        "households": int(cards / 1.6),
        "load_s": round(load_s, 1),
        "records_per_s_load": round(2 * cards / load_s),
        "worker_rss_bytes": rss,
        "restored_worker_rss_bytes": rss2,
        "rocksdb_bytes": rocks,
        "restore_s": round(restore_s, 1),
        "lookups": look,
        "extrapolated_4m": {
            "rocksdb_bytes": int(rocks * k),
            "load_s": round(load_s * k),
            "restore_s": round(restore_s * k),
            "note": "linear extrapolation from the measured size; RSS is not extrapolated "
            "(block cache and memtables are bounded per partition)",
        },
    }
    row("load into the tables (s)", fmt(load_s, 1), fmt(load_s * k))
    row("worker RSS after load (MB)", fmt(rss / 2**20), "(bounded caches)")
    row("RocksDB on disk (MB)", fmt(rocks / 1e6, 1), fmt(rocks * k / 1e6))
    row("fresh worker: restore + probe done (s)", fmt(restore_s, 1), fmt(restore_s * k))
    row("restored worker RSS (MB)", fmt(rss2 / 2**20))
    row("random point lookups / s (rocksdict)", fmt(look["lookups_per_s"]))
    return out
