"""Local table state is trusted only after a clean stop (stream/worker.py)."""

from __future__ import annotations

from pathlib import Path

from stream.worker import CLEAN_STOP_MARKER, discard_state_unless_stopped_cleanly, mark_clean_stop


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
