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


def stale_partitions(bootstrap: str, app_id: str, state_dirs: dict[str, Path]) -> list[str]:
    """``"worker0 personal_routing[2]: 67 keys, offsets 705..781"`` for every database in
    ``state_dirs`` (name -> a worker's state dir) that disagrees with its changelog."""
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
        for worker, state_dir in sorted(state_dirs.items()):
            for db_path in sorted((state_dir / "v1" / "tables").glob(f"{store}-*.db")):
                partition = int(db_path.stem.rsplit("-", 1)[1])
                db = Rdict(
                    str(db_path),
                    options=Options(raw_mode=True),
                    access_type=AccessType.read_only(),
                )
                try:
                    raw = db.get(OFFSET_KEY)
                    if raw is None:
                        continue  # never restored nor written: claims nothing
                    bad = stale_keys(by_partition.get(partition, []), db.get, int(raw))
                finally:
                    db.close()
                if bad:
                    name = store.removesuffix("-store")
                    found.append(
                        f"{worker} {name}[{partition}]: {len(bad)} keys, offsets "
                        f"{bad[0]}..{bad[-1]} (database at {int(raw)})"
                    )
    return found
