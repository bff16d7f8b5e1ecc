"""Does every worker's local table state hold what its changelog says it holds?

A table partition's RocksDB database carries the changelog offset it is up to (Faust's
offset key, stream/engine/restore.py ``OFFSET_KEY``). Whatever happened to the worker --
restores, rebalances, standby reads -- every key must then have the value of its last
changelog record at or below that offset (a tombstone = no key). A database that claims an
offset but lacks records below it is *stale*: a stage that owns it again computes from old
state, and the additive stores (the S-mobiili counters, the Bonus tallies) lose what they
miss while their offsets move on. The chaos suite found exactly that: Faust's standby reads
dropped the catch-up of a standby partition (docs/reliability.md, "Standby replicas").

Run on stopped workers (each database is opened read-only) after the group has drained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from rocksdict import AccessType, Options, Rdict

from stream.engine.restore import OFFSET_KEY
from stream.local.offsets import Record, read_all
from stream.local.topic_admin import admin_client


def stale_keys(
    changelog: Iterable[Record], get: Callable[[bytes], bytes | None], offset: int
) -> list[int]:
    """Offsets of the changelog records (at or below ``offset``) whose key's value in the
    database is not the key's last changelog value up to ``offset``, sorted."""
    last: dict[bytes, tuple[int, bytes | None]] = {}
    for rec in changelog:
        if rec.key is not None and rec.offset <= offset:
            held = last.get(rec.key)
            if held is None or rec.offset > held[0]:
                last[rec.key] = (rec.offset, rec.value)
    return sorted(o for key, (o, value) in last.items() if get(key) != value)


def stale_partitions(
    bootstrap: str, app_id: str, table_dirs: dict[str, Path], exact: bool = False
) -> list[str]:
    """``"worker0 personal_routing[2]: 67 keys, offsets 705..781"`` for every database in
    ``table_dirs`` (name -> a worker's ``v1/tables`` directory) that disagrees with its
    changelog: a record at or below the offset it claims that it lacks. ``exact``: after a
    clean stop, every database must hold exactly its changelog's last values, whatever its
    offset key says (no record missing, no key the changelog does not have)."""
    prefix, suffix = f"{app_id}-", "-changelog"
    names = admin_client(bootstrap).list_topics(timeout=30).topics
    changelogs = sorted(t for t in names if t.startswith(prefix) and t.endswith(suffix))
    found: list[str] = []
    for topic in changelogs:
        store = topic[len(prefix) : -len(suffix)]  # e.g. personal_routing-store
        records = read_all(bootstrap, topic, timeout=120)
        by_partition: dict[int, list[Record]] = {}
        for rec in records:
            by_partition.setdefault(rec.partition, []).append(rec)
        for worker, table_dir in sorted(table_dirs.items()):
            for db_path in sorted(table_dir.glob(f"{store}-*.db")):
                partition = int(db_path.stem.rsplit("-", 1)[1])
                problem = _compare(db_path, by_partition.get(partition, []), exact)
                if problem:
                    found.append(f"{worker} {store.removesuffix('-store')}[{partition}]: {problem}")
    return found


def _compare(db_path: Path, changelog: list[Record], exact: bool) -> str | None:
    db = Rdict(str(db_path), options=Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        raw = db.get(OFFSET_KEY)
        if exact:
            bad = stale_keys(
                changelog, db.get, offset=max((r.offset for r in changelog), default=-1)
            )
            known = {rec.key for rec in changelog}
            # .keys(): iterating a raw-mode Rdict itself raises (rocksdict 0.3).
            keys = db.keys()
            extra = sum(1 for k in keys if k != OFFSET_KEY and k not in known)
            if bad or extra:
                return f"{len(bad)} keys differ, {extra} keys not in the changelog"
            return None
        if raw is None:
            return None  # never restored nor written: claims nothing
        bad = stale_keys(changelog, db.get, int(raw))
    finally:
        db.close()
    if not bad:
        return None
    return f"{len(bad)} keys, offsets {bad[0]}..{bad[-1]} (database at {int(raw)})"
