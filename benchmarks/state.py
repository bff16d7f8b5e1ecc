"""Figure 5, scale of state: the card register and consents loaded into a worker's tables.

N cards (N customers, N consent records, N / 1.6 households: the national ratio of 4 M cards
to 2.5 M households) are produced to customer.cards and customer.consents; one worker loads
them (timed until lag 0). Then: the worker's resident memory, RocksDB bytes on disk (its
state directory), a fresh worker with an empty state directory restoring the tables from the
changelogs (timed until it has processed a probe receipt sent after its start), and random
point lookups on the restored RocksDB partitions (rocksdict, after the worker stops).

noida-db keeps every record in a JSON snapshot in memory (600k records ~ 468 MB) and tansu
counts wrong high watermarks for batched records (4 245 single-record sends/s), so neither
broker here can hold the national state's 8 M+ changelog records. The national size is
therefore measured by :func:`full_state`: the tables are written *directly* into the worker's
own RocksDB partition databases by the stage code itself (``card_join.step`` for every card,
``personal_routing.step`` for every consent, each on the partition the broker would give
its key), a worker is started on them, and then: its resident memory idle and after
processing receipts of random cards across the whole register, RocksDB bytes on disk,
random point lookups on the same databases, and the worker's start-up time on that state.
Only the restore from the changelogs is extrapolated from the smaller broker-loaded run,
as a rate of changelog records per second (stated as such).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import broker_bench as bb
from benchmarks.common import dir_bytes, fmt, header, log, proc_rss_bytes, row
from stream.engine.app import table_name
from stream.engine.partitioning import key_partition
from stream.engine.state import TableState
from stream.local.offsets import end_offsets
from stream.simulator.catalogue_data import _luhn_digit
from topologies import card_join, household_bonus, personal_routing
from topologies.context import Context
from topologies.pipeline import STAGES

NATIONAL_CARDS = 4_000_000
CARDS_PER_HOUSEHOLD = 1.6  # 4 M cards / 2.5 M households
REGISTER_TS = 1_735_689_600_000  # 2025-01-01T00:00Z
PROBE_RECEIPTS = 5_000


def card_number(i: int) -> str:
    body = f"7000{i:011d}"
    return body + str(_luhn_digit(body))


# The register's changes after the first load, per card (the card register in time): a move
# to another household (a second link in the card's history) and a closure (a third entry).
HISTORY_MOVES = 0.10
HISTORY_CLOSURES = 0.02


def _register(n: int, moves: float = 0.0, closures: float = 0.0) -> Iterator[dict[str, Any]]:
    """Card and consent records of ``n`` customers (one card each), in n / 1.6 households;
    then, for the shares ``moves`` and ``closures`` of the cards, a move (version 2, a day
    later) and a closure (a tombstone two days later)."""
    yield from _base_register(n)
    rnd = random.Random(11)
    households = max(1, int(n / CARDS_PER_HOUSEHOLD))
    for i in range(n):
        r = rnd.random()
        if r >= moves + closures:
            continue
        card, cust = card_number(i), f"C{i:09d}"
        at = REGISTER_TS + 86_400_000
        yield {
            "topic": "customer.cards",
            "key": card,
            "value": {
                "card_number": card,
                "customer_id": cust,
                "household_id": f"HH{rnd.randrange(households):08d}",
                "role": "MEMBER",
                "effective_at": at,
                "version": 2,
            },
            "timestamp": at,
        }
        if r < closures:
            yield {
                "topic": "customer.cards",
                "key": card,
                "value": None,
                "timestamp": at + 86_400_000,
            }


def _base_register(n: int) -> Iterator[dict[str, Any]]:
    rnd = random.Random(7)
    households = max(1, int(n / CARDS_PER_HOUSEHOLD))
    ts = REGISTER_TS
    for i in range(n):
        card = card_number(i)
        cust = f"C{i:09d}"
        hh = f"HH{rnd.randrange(households):08d}"
        yield {
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
        yield {
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


def _rdict_options() -> Any:
    from stream.engine.state import rocks_options

    return rocks_options()


def _lookups(
    dbs: list[Path], keys: list[tuple[int, bytes]], samples: int = 100_000
) -> dict[str, Any]:
    """Random point gets on table partition databases of a stopped worker (rocksdict).

    ``keys``: (index into ``dbs``, key) pairs known to exist; each sampled key is read from
    its own partition's database, as the worker does. Hits are counted, so a figure over
    missing keys would show.
    """
    from rocksdict import AccessType, Rdict

    if not keys:
        return {"lookups_per_s": None, "keys": 0}
    opened = [
        Rdict(str(p), options=_rdict_options(), access_type=AccessType.read_only()) for p in dbs
    ]
    try:
        rnd = random.Random(3)
        sample = [keys[rnd.randrange(len(keys))] for _ in range(samples)]
        hits = 0
        t0 = time.perf_counter()
        for i, k in sample:
            if opened[i].get(k) is not None:
                hits += 1
        dt = time.perf_counter() - t0
    finally:
        for db in opened:
            db.close()
    return {
        "lookups_per_s": round(samples / dt),
        "hits": hits,
        "samples": samples,
        "keys": len(keys),
        "databases": len(dbs),
    }


def _card_lookups(dbs: list[Path], keys: list[tuple[int, bytes]]) -> dict[str, Any]:
    """The card register's lookup as stage 1 does it -- get, decode, the link at a purchase
    time (topologies/card_register.link_at) -- timed apart for cards with one link and for
    cards with a history, with the entries' sizes."""
    import orjson
    from rocksdict import AccessType, Rdict

    from topologies import card_register

    opened = [
        Rdict(str(p), options=_rdict_options(), access_type=AccessType.read_only()) for p in dbs
    ]
    t = REGISTER_TS + 3 * 86_400_000
    figures: dict[str, dict[str, float]] = {}
    try:
        for name, want in (("one_link", 1), ("history", 2)):
            sizes: list[int] = []
            sample = []
            for i, k in keys:
                raw = opened[i].get(k)
                if raw is not None and (len(orjson.loads(raw)["h"]) >= 2) == (want == 2):
                    sample.append((i, k))
                    sizes.append(len(k) + len(raw))
                if len(sample) >= 20_000:
                    break
            if not sample:
                continue
            t0 = time.perf_counter()
            for _ in range(3):
                for i, k in sample:
                    card_register.link_at(card_register.migrate(orjson.loads(opened[i][k])), t)
            dt = (time.perf_counter() - t0) / (3 * len(sample))
            figures[name] = {
                "cards_sampled": len(sample),
                "lookup_us": round(dt * 1e6, 2),
                "entry_bytes": round(sum(sizes) / len(sizes), 1),
            }
    finally:
        for db in opened:
            db.close()
    return figures


def _table_dbs(state_dir: Path) -> list[Path]:
    return sorted(p for p in state_dir.rglob("*.db") if (p / "CURRENT").exists())


def _all_keys(dbs: list[Path]) -> list[tuple[int, bytes]]:
    """Every table key of every database (fine at the broker-loaded size)."""
    from rocksdict import AccessType, Rdict

    out = []
    for i, p in enumerate(dbs):
        db = Rdict(str(p), options=_rdict_options(), access_type=AccessType.read_only())
        try:
            # keys(), not iter(db): rocksdict's __iter__ raises KeyError in raw mode.
            out += [(i, k) for k in db.keys() if not k.startswith(b"__faust")]  # noqa: SIM118
        finally:
            db.close()
    return out


def _changelog_records(env: bb.Env, app_id: str) -> int:
    total = 0
    for stage in STAGES:
        if stage.is_global:
            continue
        topic = f"{app_id}-{table_name(stage)}-changelog"
        with contextlib.suppress(Exception):  # a table with no changelog topic yet
            total += sum(end_offsets(env.bootstrap, topic).values())
    return total


def run(cards: int, full_cards: int = 0, restore_customers: int = 0) -> dict[str, Any]:
    out = loaded(cards)
    if full_cards:
        out["full"] = full_state(full_cards, restore_customers or max(1, full_cards // 20))
    return out


def loaded(cards: int) -> dict[str, Any]:
    """The register produced to the broker and loaded by a worker; restore from changelogs."""
    header(f"scale of state, broker-loaded: {cards:,} cards + consents", "measured")
    env = bb.Env("state")
    try:
        # Start-up on an empty state with nothing to restore: the baseline the restore
        # figure is measured against.
        events = list(_register(cards))
        log(f"state: producing {len(events):,} register records")
        env.produce(bb.encode_events(env.codec, events))
        t0 = time.monotonic()
        w = env.worker("bench-state")
        env.wait_idle("bench-state", timeout=3600, poll=2.0)
        load_s = time.monotonic() - t0
        assert w.proc is not None
        rss = proc_rss_bytes(w.proc.pid)
        w.stop()
        env.workers.remove(w)
        rocks = dir_bytes(_state_dir(w))
        try:
            dbs = _table_dbs(_state_dir(w))
            look = _lookups(dbs, _all_keys(dbs))
        except Exception as exc:  # noqa: BLE001 - keep the other state figures
            look = {"lookups_per_s": None, "error": f"{type(exc).__name__}: {exc}"}
        changelog = _changelog_records(env, "bench-state")
        log(f"state: fresh worker restoring {changelog:,} changelog records")
        # The probe: a card record sent again (idempotent); the worker reaches it only after
        # its tables are restored, so lag 0 means restore + probe done.
        restore_s = _start_until_probe(env, "bench-state", events[:1])
        w2 = env.workers[-1]
        assert w2.proc is not None
        rss2 = proc_rss_bytes(w2.proc.pid)
    finally:
        env.close()
    out = {
        "broker": env.kind,
        "cards": cards,
        "consents": cards,
        "households": int(cards / CARDS_PER_HOUSEHOLD),
        "load_s": round(load_s, 1),
        "records_per_s_load": round(2 * cards / load_s),
        "worker_rss_bytes": rss,
        "restored_worker_rss_bytes": rss2,
        "rocksdb_bytes": rocks,
        "changelog_records": changelog,
        "restore_s": round(restore_s, 1),
        "lookups": look,
    }
    row("register records loaded through the worker / s", fmt(out["records_per_s_load"]))
    row("worker RSS after load (MB)", fmt(rss / 2**20))
    row("RocksDB on disk (MB)", fmt(rocks / 1e6, 1))
    row(f"fresh worker: start, restore {changelog:,} records, probe (s)", fmt(restore_s, 1))
    row("restored worker RSS (MB)", fmt(rss2 / 2**20))
    row("random point lookups / s (rocksdict)", fmt(look.get("lookups_per_s")))
    return out


def _state_dir(w: Any) -> Path:
    return Path(w.env["PURCHASE_STREAM_STATE_DIR"])


def _start_until_probe(
    env: bb.Env,
    app_id: str,
    probe: list[Any],
    state_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> float:
    """Start a worker and time it until it has processed ``probe`` (sent 1 s after start).

    The worker reaches the probe only once its tables are restored, so lag 0 then means
    start-up + restore + probe done (plus up to one commit interval).
    """
    t0 = time.monotonic()
    env.worker(app_id, extra_env, state_dir=state_dir)
    time.sleep(1.0)
    env.produce(bb.encode_events(env.codec, probe))
    env.wait_idle(app_id, timeout=3600, poll=0.5)
    return time.monotonic() - t0


class _PartitionState(TableState):
    """The worker's TableState over one open partition database instead of a Faust table.

    Same encoding and write order as the worker's; every write is also passed to
    ``changelog(key, value)`` if given (the restore sample) and counted.
    """

    def __init__(self, db: Any, changelog: Any = None) -> None:
        self._db = db
        self.writes = 0

        def record(_partition: int, key: bytes, value: bytes | None) -> None:
            self.writes += 1
            if changelog is not None:
                changelog(key, value)

        super().__init__(None, 0, record)

    @property
    def db(self) -> Any:
        return self._db


BUILT_STAGES = {
    "customer.cards": card_join,
    "customer.consents": personal_routing,
    # the card register's propagation (topologies/card_register.py) to the person's and the
    # household's partitions
    "register.people": personal_routing,
    "register.households": household_bonus,
}
# Each stage once, in pipeline order (BUILT_STAGES has one per topic).
BUILT_STAGE_MODULES = (card_join, personal_routing, household_bonus)


def _build(
    cards: int,
    partitions: int,
    states: dict[tuple[str, int], _PartitionState],
    history: tuple[float, float] = (0.0, 0.0),
) -> dict[str, Any]:
    """Run the register's records through the stage steps that keep it, on ``states``.

    The stage code decides what is stored (the same steps the worker runs on a record of
    customer.cards / customer.consents, without the Avro round trip); the partition is the
    one the broker's default partitioner gives the record's key. ``states`` is keyed by
    (stage name, partition).
    """
    from stream.settings import load_rules

    rules = load_rules()
    t0 = time.monotonic()
    last = t0
    rejected = 0
    for i, e in enumerate(_register(cards, *history)):
        queue = [(e["topic"], e["key"], e["value"])]
        while queue:  # the record, then what it sends to the other built stages
            topic, key, value = queue.pop(0)
            stage = BUILT_STAGES[topic]
            p = key_partition(key, partitions)
            ctx = Context(now_ms=e["timestamp"], rules=rules, topic=topic, partition=p, offset=i)
            result = stage.step(ctx, states[(stage.STAGE, p)], topic, key, value)
            rejected += len(result.rejects)
            queue.extend((x.topic, x.key, x.value) for x in result.emits if x.topic in BUILT_STAGES)
        now = time.monotonic()
        if now - last > 15:
            last = now
            log(f"state: built {i + 1:,} register records of {cards:,} cards ({now - t0:.0f}s)")
    return {
        "build_s": round(time.monotonic() - t0, 1),
        "state_writes": sum(s.writes for s in states.values()),
        "rejected": rejected,
    }


def _stage(name: str) -> Any:
    return next(s for s in STAGES if s.name == name)


def _build_in_place(
    tabledir: Path, cards: int, partitions: int, history: tuple[float, float] = (0.0, 0.0)
) -> dict[str, Any]:
    """Write the register's table state straight into a stopped worker's partition databases."""
    from rocksdict import Rdict, WriteOptions

    wo = WriteOptions()
    wo.disable_wal = True  # flushed and closed below; a failed build is simply discarded
    dbs: dict[tuple[str, int], Any] = {}
    try:
        for topic_stage in BUILT_STAGE_MODULES:
            for p in range(partitions):
                path = tabledir / f"{table_name(_stage(topic_stage.STAGE))}-{p}.db"
                if not (path / "CURRENT").exists():
                    raise RuntimeError(f"{path}: the worker did not create this table partition")
                db = dbs[(topic_stage.STAGE, p)] = Rdict(str(path), options=_rdict_options())
                db.set_write_options(wo)
        states = {k: _PartitionState(db) for k, db in dbs.items()}
        built = _build(cards, partitions, states, history)
        for db in dbs.values():
            db.flush(True)
    finally:
        for db in dbs.values():
            db.close()
    return built


def _restore_sample(env: bb.Env, customers: int, partitions: int) -> dict[str, Any]:
    """Restore rates: the state of ``customers`` written to a new app's changelogs.

    A worker of a fresh app id is started (Faust creates its changelog topics) and stopped;
    the stage steps then run the register of ``customers`` against scratch partitions and
    every write goes to that app's changelog partition, as the worker's own writes would.
    Two fresh workers (empty state directories) are timed until they have restored them and
    processed a probe: one with Faust's own recovery only (``bulk_restore`` off), one with
    the bulk restore (stream/engine/restore.py), each against the same app's start-up with nothing
    to restore.
    """
    from stream.engine.output import Output

    app = "bench-state-restore"
    probe = [next(_register(1))]
    empty_s = _start_until_probe(env, app, probe)
    env.workers.pop().stop()
    output = Output(env.bootstrap, "bench-state-sample")

    def sender(topic: str, p: int) -> Any:
        return lambda k, v: output.send(topic, k, v, partition=p)

    from rocksdict import Rdict

    states = {}
    scratch = []
    for topic_stage in BUILT_STAGE_MODULES:
        topic = f"{app}-{table_name(_stage(topic_stage.STAGE))}-changelog"
        for p in range(partitions):
            db = Rdict(str(env.tmp / f"sample-{topic_stage.STAGE}-{p}"), options=_rdict_options())
            scratch.append(db)
            states[(topic_stage.STAGE, p)] = _PartitionState(db, sender(topic, p))
    try:
        built = _build(customers, partitions, states)
    finally:
        for db in scratch:
            db.close()
    assert output.close(120), "changelog sample not delivered"
    records = _changelog_records(env, app)
    out: dict[str, Any] = {
        "customers": customers,
        "changelog_records": records,
        "state_writes": built["state_writes"],
        "empty_start_s": round(empty_s, 1),
    }
    for name, bulk in (("faust_recovery", "0"), ("bulk_restore", "1")):
        log(f"state: fresh worker restoring {records:,} changelog records ({name})")
        restore_s = _start_until_probe(
            env, app, probe, extra_env={"PURCHASE_STREAM_BULK_RESTORE": bulk}
        )
        w = env.workers[-1]
        assert w.proc is not None
        rss = proc_rss_bytes(w.proc.pid)
        env.workers.pop().stop()
        beyond = restore_s - empty_s
        out[name] = {
            "restore_s": round(restore_s, 1),
            "restore_records_per_s": round(records / beyond) if beyond > 1.0 else None,
            "restored_worker_rss_bytes": rss,
        }
    return out


def _probe_receipts(n: int, cards: int) -> tuple[list[Any], list[Any]]:
    """(catalogue records, ``n`` simulated receipts moved onto random cards of the register)."""
    register, receipts = bb.sim_events(n, 2_000, 11)
    catalogue = [e for e in register if e["topic"] == "product.catalog"]
    rnd = random.Random(5)
    out = []
    for e in receipts:
        v = e["value"]
        if not isinstance(v, dict) or not v.get("card_number") or v.get("original_receipt_id"):
            continue  # anonymous receipts and returns: no card lookup to exercise
        card = card_number(rnd.randrange(cards))
        out.append({**e, "key": card, "value": {**v, "card_number": card}})
    return catalogue, out


def full_state(
    cards: int,
    restore_customers: int,
    partitions: int = bb.PARTITIONS,
    history: tuple[float, float] = (HISTORY_MOVES, HISTORY_CLOSURES),
) -> dict[str, Any]:
    """The national-size tables built in place (with the register's history: a share of
    the cards moved, some also closed), a worker on them, and the restore rate."""
    header(
        f"scale of state, built in place: {cards:,} cards, {cards:,} consents, "
        f"{int(cards / CARDS_PER_HOUSEHOLD):,} households",
        "measured",
    )
    env = bb.Env("state-full")
    app = "bench-state-full"
    try:
        # First, while the inputs hold nothing a new group would process at start.
        log(f"state: restore sample, {restore_customers:,} customers via the changelogs")
        restore = _restore_sample(env, restore_customers, partitions)
        probe_card = next(_register(1))  # card 0: the build writes the same entry again
        _start_until_probe(env, app, [probe_card])
        w1 = env.workers.pop()
        assert w1.proc is not None
        rss_empty = proc_rss_bytes(w1.proc.pid)
        assert w1.stop() == 0, w1.log_tail()
        state_dir = _state_dir(w1)
        tabledir = next(p.parent for p in state_dir.rglob("*.db"))
        log(f"state: building {cards:,} cards + consents into {tabledir}")
        built = _build_in_place(tabledir, cards, partitions, history)
        rocks = dir_bytes(tabledir)
        log(f"state: {built['state_writes']:,} state writes in {built['build_s']}s; lookups")
        dbs = _table_dbs(tabledir)
        index = {p.name: i for i, p in enumerate(dbs)}

        def db_of(stage: str, key: str) -> int:
            return index[f"{table_name(_stage(stage))}-{key_partition(key, partitions)}.db"]

        keys = [
            (db_of(card_join.STAGE, c), f"card|{c}".encode())
            for c in (card_number(i) for i in range(0, cards, 7))
        ]
        keys += [
            (db_of(personal_routing.STAGE, c), f"consent|{c}".encode())
            for c in (f"C{i:09d}" for i in range(3, cards, 7))
        ]
        look = _lookups(dbs, keys)
        card_look = _card_lookups(dbs, [k for k in keys if k[1].startswith(b"card|")])
        del keys

        catalogue, probe = _probe_receipts(PROBE_RECEIPTS, cards)
        env.produce(bb.encode_events(env.codec, catalogue))
        start_s = _start_until_probe(env, app, [probe_card], state_dir=state_dir)
        w2 = env.workers[-1]
        assert w2.proc is not None
        rss_started = proc_rss_bytes(w2.proc.pid)
        log(f"state: worker up on the built state in {start_s:.1f}s; {len(probe):,} receipts")
        t1 = time.monotonic()
        env.produce(bb.encode_events(env.codec, probe))
        env.wait_idle(app, timeout=1800, poll=0.5)
        probe_s = time.monotonic() - t1
        rss_after = proc_rss_bytes(w2.proc.pid)
        assert w2.stop() == 0, w2.log_tail()
        env.workers.remove(w2)
    finally:
        env.close()
    estimates = {}
    for name in ("faust_recovery", "bulk_restore"):
        rate = restore[name]["restore_records_per_s"]
        estimates[name] = round(built["state_writes"] / rate) if rate else None
    out = {
        "cards": cards,
        "consents": cards,
        "households": int(cards / CARDS_PER_HOUSEHOLD),
        **built,
        "rocksdb_bytes": rocks,
        "worker_rss_empty_bytes": rss_empty,
        "worker_start_s": round(start_s, 1),
        "worker_rss_started_bytes": rss_started,
        "probe_receipts": len(probe),
        "probe_receipts_per_s": round(len(probe) / probe_s, 1),
        "worker_rss_after_probe_bytes": rss_after,
        "lookups": look,
        "history": {"moves": history[0], "closures": history[1]},
        "card_lookups": card_look,
        "restore_sample": restore,
        "restore_s_estimated": estimates,
        "restore_note": "this state's changelog records / the restore rate of the sample "
        "(restore time beyond an empty start-up of the same app)",
    }
    row("state writes (the changelog records this state makes)", fmt(built["state_writes"]))
    row("RocksDB on disk (MB)", fmt(rocks / 1e6))
    row("worker RSS, empty state (MB)", fmt(rss_empty / 2**20))
    row("worker start-up on this state, to lag 0 (s)", fmt(start_s, 1))
    row("worker RSS after start-up (MB)", fmt(rss_started / 2**20))
    row(f"worker RSS after {len(probe):,} receipts of random cards (MB)", fmt(rss_after / 2**20))
    row("  those receipts / s", fmt(out["probe_receipts_per_s"]))
    row("random point lookups / s (rocksdict)", fmt(look.get("lookups_per_s")))
    for name, label in (("one_link", "without history"), ("history", "with history")):
        f = card_look.get(name)
        if f:
            row(f"card lookup at a purchase time, {label} (µs)", fmt(f["lookup_us"], 2))
            row(f"card entry, {label} (bytes)", fmt(f["entry_bytes"], 1))
    row(
        f"restore sample: {restore['changelog_records']:,} changelog records; empty start (s)",
        fmt(restore["empty_start_s"], 1),
    )
    for name, label in (("faust_recovery", "Faust's recovery"), ("bulk_restore", "bulk restore")):
        r = restore[name]
        row(f"  {label}: fresh worker to the probe (s)", fmt(r["restore_s"], 1))
        row(f"  {label}: changelog records/s", fmt(r["restore_records_per_s"]))
        row(f"  {label}: restored worker RSS (MB)", fmt(r["restored_worker_rss_bytes"] / 2**20))
        row(f"  {label}: this whole state, estimated (s)", fmt(estimates[name]))
    return out
