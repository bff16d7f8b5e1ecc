"""`make demo` end to end: `purchase-stream demo --duration N` on its own embedded broker.

The demo is a newcomer's first contact with the system, so it is run here as a user runs it
(a child process, real broker, registry, worker and simulator) and its live lines are read
back: receipts flow, line items are routed, it stops cleanly with exit 0, and the lag column
measures what the worker's group has left to do (it once summed `product.catalog`, which the
group never commits, so it never fell below the catalogue's size).
"""

from __future__ import annotations

import re
import subprocess
import sys

LINE = re.compile(r"^t=\s*(\d+)s receipts in\s+(\d+) .*\| lag (-?\d+)$")
ROUTED = re.compile(
    r"line items\s+(\d+): to personal\s+(\d+) marketing\s+(\d+) e-receipt\s+(\d+) "
    r"recall\s+(\d+) \|"
)
CATALOGUE = re.compile(r"'product\.catalog': (\d+)")


def test_demo_runs_routes_and_reports_the_groups_lag() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "stream.cli", "demo", "--duration", "16", "--rate", "40"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "stopped cleanly" in out, out[-3000:]

    lines = [m.groups() for m in map(LINE.match, out.splitlines()) if m]
    assert len(lines) >= 4, out[-3000:]
    receipts = [int(r) for _t, r, _lag in lines]
    lags = [int(lag) for _t, _r, lag in lines]
    assert receipts[-1] > 100, lines  # ~40/s for 16 s, less the start-up
    assert -1 not in lags, lines  # the lag query never failed
    routed = ROUTED.findall(out)
    assert routed and int(routed[-1][1]) > 0, out[-3000:]
    # Each purpose gets at most the line items received (the old "withheld" column summed the
    # four purposes' refusals and ran past the line items without saying so).
    for line_items, *per_purpose in routed:
        assert all(int(n) <= int(line_items) for n in per_purpose), routed
    assert "columns  line items:" in out, out[-3000:]

    catalogue = CATALOGUE.search(out)
    assert catalogue, out[-3000:]
    # At 40 receipts/s the worker keeps up: what is left between two commits (2.8 s) is a
    # few hundred records, far below the catalogue, which the old column always included.
    steady = lags[len(lags) // 2 :]
    assert min(steady) < int(catalogue.group(1)) // 2, (lags, catalogue.group(1))
