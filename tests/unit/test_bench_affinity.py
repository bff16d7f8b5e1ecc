"""The benchmarks' CPU pinning (``benchmarks.common.own_core``) on real processes."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time

import pytest

from benchmarks.common import own_core, thread_affinities

# A process with a second thread from the start; on a line from stdin it starts a third
# and prints that thread's CPU set.
CHILD = """
import os, sys, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
out = []
t = threading.Thread(target=lambda: out.append(sorted(os.sched_getaffinity(0))))
t.start(); t.join()
print(out[0], flush=True)
sys.stdin.readline()
"""


def _child() -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 10
    while len(os.listdir(f"/proc/{p.pid}/task")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return p


def test_own_core_pins_every_thread_and_gives_the_original_set_back() -> None:
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        with pytest.raises(RuntimeError, match="two CPUs"), own_core([], []):
            pass
        return
    worker, other = _child(), _child()
    assert worker.stdin is not None and worker.stdout is not None
    try:
        assert len(thread_affinities(worker.pid)) >= 2
        with own_core([worker.pid], [other.pid, os.getpid()]) as cpus:
            mine = set(cpus["worker_cpus"])
            rest = set(cpus["other_cpus"])
            assert len(mine) == 1 and mine.isdisjoint(rest) and mine | rest == allowed
            assert all(a == mine for a in thread_affinities(worker.pid))
            assert all(a == rest for a in thread_affinities(other.pid))
            assert all(a == rest for a in thread_affinities(os.getpid()))
            # a thread the pinned process starts afterwards stays on its CPU
            worker.stdin.write("go\n")
            worker.stdin.flush()
            assert set(ast.literal_eval(worker.stdout.readline())) == mine
        for pid in (worker.pid, other.pid, os.getpid()):
            assert all(a == allowed for a in thread_affinities(pid))
    finally:
        for p in (worker, other):
            p.kill()
            p.wait()
