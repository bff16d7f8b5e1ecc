"""A command whose reader goes away (``purchase-stream extract ... | head -1``) exits quietly:
no BrokenPipeError traceback (CPython's documented SIGPIPE handling, stream/cli/__init__.py)."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from stream import cli as stream_cli
from tests.functional.test_replay_cli import PRODUCT, T0, card, cli, consent, receipt, write

HOUR = 3_600_000


def replay_state(tmp_path: Path) -> Path:
    events = [
        {"topic": "product.catalog", "key": PRODUCT["gtin"], "timestamp": T0, "value": PRODUCT},
        card("CARD-1", "CUST-1"),
        consent("CUST-1", 1, T0, True),
        *(receipt(f"R-{i}", "CARD-1", T0 + HOUR + i) for i in range(20)),
    ]
    state = tmp_path / "state"
    res = cli("replay", str(write(tmp_path / "events.jsonl", events)), "--state-dir", str(state))
    assert res.returncode == 0, res.stderr
    return state


def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with stdout a pipe whose reader is already gone: its first write fails."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "stream.cli", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(write_end)


def test_extract_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    state = replay_state(tmp_path)
    res = run_into_closed_pipe("extract", "--state-dir", str(state), "--customer", "CUST-1")
    assert res.returncode == 1
    assert res.stderr.decode() == ""  # no traceback, no "Exception ignored ... BrokenPipeError"


def test_extract_piped_to_head_prints_the_first_line_only(tmp_path: Path) -> None:
    state = replay_state(tmp_path)
    command = [sys.executable, "-m", "stream.cli", "extract", "--state-dir", str(state)]
    res = subprocess.run(  # noqa: S602 - the user's shell pipeline, every word quoted
        f"{shlex.join([*command, '--customer', 'CUST-1'])} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0  # head's status
    assert res.stdout == "{\n"
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error(monkeypatch, capfd) -> None:
    """Only a gone reader of stdout is quiet: a BrokenPipeError from anything else (a socket,
    another pipe) while stdout is fine propagates."""

    def broken(_args: argparse.Namespace) -> int:
        raise BrokenPipeError("some socket")

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=broken)
    monkeypatch.setattr(stream_cli, "build_parser", lambda: parser)
    with pytest.raises(BrokenPipeError, match="some socket"):
        stream_cli.main([])
