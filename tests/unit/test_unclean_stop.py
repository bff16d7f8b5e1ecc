"""Local table state is trusted only after a clean stop (stream/engine/worker.py), and the
offsets Faust never handed to a stage are found (stream/engine/offsets.py)."""

from __future__ import annotations

from pathlib import Path

from stream.engine.offsets import OffsetTracker
from stream.engine.worker import (
    CLEAN_STOP_MARKER,
    discard_state_unless_stopped_cleanly,
    mark_clean_stop,
)


def _tables(tmp_path: Path) -> Path:
    tabledir = tmp_path / "v1" / "tables"
    for name in ("household_bonus-store-0.db", "card_join-store-3.db"):
        (tabledir / name).mkdir(parents=True)
        (tabledir / name / "000009.log").write_bytes(b"rocksdb")
    return tabledir


def test_state_left_by_a_crash_is_discarded(tmp_path: Path) -> None:
    tabledir = _tables(tmp_path)  # no marker: the last worker was killed
    assert discard_state_unless_stopped_cleanly(tabledir) is True
    assert list(tabledir.glob("*.db")) == []


def test_state_after_a_clean_stop_is_kept_once(tmp_path: Path) -> None:
    tabledir = _tables(tmp_path)
    mark_clean_stop(tabledir)
    assert discard_state_unless_stopped_cleanly(tabledir) is False
    assert len(list(tabledir.glob("*.db"))) == 2
    # The marker is consumed at start: if this run then crashes, the next start discards.
    assert not (tabledir / CLEAN_STOP_MARKER).exists()
    assert discard_state_unless_stopped_cleanly(tabledir) is True
    assert list(tabledir.glob("*.db")) == []


def test_a_first_start_has_nothing_to_discard(tmp_path: Path) -> None:
    tabledir = tmp_path / "v1" / "tables"
    assert discard_state_unless_stopped_cleanly(tabledir) is False
    mark_clean_stop(tabledir)  # no tables directory yet: nothing to mark
    assert not tabledir.exists()


def test_a_forward_jump_on_a_stream_topic_is_a_gap_to_read_back() -> None:
    offsets = OffsetTracker()
    assert offsets.gap("household_bonus", "receipts.totals", 0, 40) is None  # start
    offsets.done("receipts.totals", 0, 40)
    assert offsets.gap("household_bonus", "receipts.totals", 0, 41) is None
    offsets.done("receipts.totals", 0, 41)
    # Faust handed over 44 after 41: 42..43 were never seen by this stage.
    assert offsets.gap("household_bonus", "receipts.totals", 0, 44) == (42, 43)
    # Not marked done until processed: a retry after a registry outage finds it again.
    assert offsets.gap("household_bonus", "receipts.totals", 0, 44) == (42, 43)
    offsets.done("receipts.totals", 0, 44)
    assert offsets.gap("household_bonus", "receipts.totals", 0, 45) is None
    # On a compacted topic, jumps are what compaction leaves.
    offsets.done("customer.consents", 1, 3)
    assert offsets.gap("personal_routing", "customer.consents", 1, 9) is None
    # Revoked, then assigned again: another worker processed it meanwhile, no gap.
    offsets.forget([("receipts.totals", 0)])
    assert offsets.gap("household_bonus", "receipts.totals", 0, 90) is None


def test_a_first_record_past_the_groups_committed_offset_is_a_gap_to_read_back() -> None:
    # The chaos suite lost a receipt at a handover: the new owner started the partition one
    # record past where the group had committed, and nothing noticed.
    offsets = OffsetTracker()
    offsets.start[("pos.receipts", 1)] = 173
    assert offsets.gap("card_join", "pos.receipts", 1, 174) == (173, 173)
    # A retry (registry outage) finds it again; once done, the start is forgotten.
    assert offsets.gap("card_join", "pos.receipts", 1, 174) == (173, 173)
    offsets.done("pos.receipts", 1, 174)
    assert ("pos.receipts", 1) not in offsets.start
    # Starting where the group committed is no gap.
    offsets.start[("pos.receipts", 2)] = 50
    assert offsets.gap("card_join", "pos.receipts", 2, 50) is None
