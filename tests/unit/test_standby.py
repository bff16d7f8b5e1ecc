"""No standby replicas: Faust's standby reads left a table partition's database stale.

Found by the chaos suite (docs/reliability.md, "Standby replicas"): a standby partition's
catch-up was dropped while its database's offset key moved past it, so the worker that owned
the partition next counted from old figures and the S-mobiili counters lost receipts. The
worker turns standbys off (stream/engine/app.py); these tests pin that Faust's assignor then
gives no worker a standby, and that with Faust's default it would.
"""

from __future__ import annotations

from pathlib import Path

from faust.assignor.client_assignment import CopartitionedAssignment
from faust.assignor.copartitioned_assignor import CopartitionedAssignor

from stream.engine.app import faust_app
from stream.local.offsets import Record
from stream.settings import Settings
from tests.integration.state_check import stale_keys

TOPICS = {"receipts.identified", "customer.consents"}


def standbys(replicas: int, partitions: int = 4) -> dict[str, set[int]]:
    """Standby partitions per member of a two-worker group, as Faust's assignor gives them."""
    members = {m: CopartitionedAssignment(topics=set(TOPICS)) for m in ("w0", "w1")}
    assignment = CopartitionedAssignor(
        topics=TOPICS, cluster_asgn=members, num_partitions=partitions, replicas=replicas
    ).get_assignment()
    return {m: a.standbys for m, a in assignment.items()}


def test_faust_default_gives_every_worker_standbys() -> None:
    # What the worker turns off: with one replica each worker reads the other's partitions.
    assert all(standbys(replicas=1).values())


def test_the_worker_assigns_no_standbys(tmp_path: Path) -> None:
    app = faust_app(Settings(state_dir=str(tmp_path), app_id="standby-test"))
    assert app.conf.table_standby_replicas == 0
    assert app.assignor.replicas == 0  # type: ignore[attr-defined]
    assert standbys(replicas=app.assignor.replicas) == {"w0": set(), "w1": set()}  # type: ignore[attr-defined]


def rec(offset: int, key: bytes, value: bytes | None) -> Record:
    return Record(key, value, 2, offset, -1)


def test_stale_keys_finds_changelog_records_a_database_lacks() -> None:
    changelog = [
        rec(0, b"cn|a", b"1"),
        rec(1, b"rt|a|r1", b"t1"),
        rec(2, b"cn|a", b"2"),  # the database missed this one
        rec(3, b"rt|a|r2", b"t2"),  # and this one
        rec(4, b"pl|a|r1", None),  # a tombstone: no key is right
        rec(5, b"cn|b", b"9"),  # beyond the database's offset: not claimed
    ]
    db = {b"cn|a": b"1", b"rt|a|r1": b"t1"}
    assert stale_keys(changelog, db.get, offset=4) == [2, 3]
    db.update({b"cn|a": b"2", b"rt|a|r2": b"t2"})
    assert stale_keys(changelog, db.get, offset=4) == []
    db[b"pl|a|r1"] = b"x"  # a key the changelog deleted, still held
    assert stale_keys(changelog, db.get, offset=4) == [4]
