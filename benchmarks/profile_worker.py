"""Where one worker's time goes: a py-spy profile of a Faust worker draining a backlog.

A fresh broker and worker; the register is loaded first (not profiled); then py-spy samples
the worker (``py-spy record --threads --gil -r 50 -f raw``) from just before the backlog is
produced until the group's lag is 0. ``--gil`` keeps only the thread that holds the GIL at
each sample: the shares are of the time the worker runs Python, and a thread waiting (a
feed reader in ``poll``, an event loop in ``epoll``) is not counted as busy, which py-spy's
default "active" samples did for native waits. librdkafka's own threads never hold the GIL:
their CPU is in the worker's CPU-seconds, not in the shares. Each sample is put in one class
by its thread and call path (:func:`classify`), and the shares are printed. py-spy is a dev
dependency (``make venv`` installs it); it needs ptrace on the worker (a container without
``SYS_PTRACE`` refuses it, and the figure then says so).

The classes, in the order a sample is tested:

- **stage code**: below ``Runner.process`` (stream/engine/runner.py), subdivided by the
  deepest frame of: metrics (prometheus_client), changelog sends (stream/engine/output.py),
  state (stream/engine/state.py, rocksdict), Avro (stream/serde/), the topology steps
  (topologies/); what is left is the runner's own work;
- on the main thread otherwise, by the deepest frame that is Faust or mode, aiokafka, or this
  project (the adapter: the batch loop, output sends and delivery reports, packing, serving,
  observability); a sample with none of these is the event loop;
- aiokafka's consumer thread (mode's ``ServiceThread``, "Thread-1"), the catalogue and
  live-feed reader threads, and any other thread.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks import broker_bench
from benchmarks.common import fmt, header, proc_cpu_s, row

STAGE = "stage code"
STAGE_PARTS = (
    # (class, what a frame's file path contains); the deepest matching frame decides
    ("metrics", ("prometheus_client/",)),
    ("changelog sends of state writes", ("stream/engine/output.py",)),
    ("state: RocksDB gets and puts, JSON values", ("stream/engine/state.py", "rocksdict")),
    ("Avro (compiled codec)", ("stream/serde/", "fastavro")),
    ("the topology steps' own logic", ("topologies/",)),
)
MAIN_PARTS = (
    ("Faust's and mode's stream machinery", ("faust/", "mode/")),
    ("aiokafka on the main loop", ("aiokafka/",)),
    (
        "the adapter: batch loop, output sends, delivery reports, serving, observability",
        ("stream/",),
    ),
)
# The frames every main-thread sample starts with: the command line and the loop's runner
# (mode's Worker runs the event loop, whose native code has no frame of its own). A sample
# whose other frames match no class is the event loop's.
ROOT_FRAMES = ("<frozen runpy>", "stream/cli/", "stream/engine/worker.py", "mode/worker.py")
THREADS = {
    "Thread-1": "aiokafka's consumer thread",
    "catalog-feed": "catalogue and live-feed threads",
    "live-feed": "catalogue and live-feed threads",
}
ORDER = (
    [STAGE]
    + [f"{STAGE}: {name}" for name, _ in STAGE_PARTS]
    + [f"{STAGE}: the runner's own work"]
    + [name for name, _ in MAIN_PARTS]
    + ["event loop and the rest of the main thread"]
    + sorted(set(THREADS.values()))
    + ["other threads"]
)


def _file(frame: str) -> str:
    # "function (path/file.py:123)" -> "path/file.py"
    start = frame.rfind("(")
    return frame[start + 1 :].rsplit(":", 1)[0] if start >= 0 else ""


def _deepest(frames: list[str], parts: Iterable[tuple[str, tuple[str, ...]]]) -> str | None:
    parts = list(parts)
    for frame in reversed(frames):
        path = _file(frame)
        for name, needles in parts:
            if any(n in path for n in needles):
                return name
    return None


def classify_stack(stack: str) -> tuple[str, str | None]:
    """(class, stage-code part or None) of one py-spy raw stack ``thread (id): name;f1;f2...``."""
    frames = stack.split(";")
    thread = frames[0].split(":", 1)[1].strip() if ":" in frames[0] else frames[0]
    frames = [f for f in frames[1:] if not any(r in _file(f) for r in ROOT_FRAMES)]
    if thread != "MainThread":
        return THREADS.get(thread, "other threads"), None
    for i, frame in enumerate(frames):
        if _file(frame).endswith("stream/engine/runner.py"):
            part = _deepest(frames[i + 1 :], STAGE_PARTS) or "the runner's own work"
            return STAGE, part
    return _deepest(frames, MAIN_PARTS) or "event loop and the rest of the main thread", None


def classify(lines: Iterable[str]) -> dict[str, int]:
    """Samples per class (and per ``stage code: part``) of py-spy's raw output."""
    counts: Counter[str] = Counter()
    for line in lines:
        line = line.rstrip()
        if not line:
            continue
        stack, _, n = line.rpartition(" ")
        cls, part = classify_stack(stack)
        counts[cls] += int(n)
        if part is not None:
            counts[f"{STAGE}: {part}"] += int(n)
    return dict(counts)


def shares(counts: dict[str, int]) -> list[tuple[str, int, float]]:
    """(class, samples, % of all samples) in the report's order; parts are not added twice."""
    total = sum(v for k, v in counts.items() if not k.startswith(f"{STAGE}: "))
    return [(k, counts[k], 100.0 * counts[k] / total) for k in ORDER if counts.get(k) and total]


def run(receipts: int, households: int, seed: int) -> dict[str, Any]:
    # The dev dependency beside this interpreter (make venv installs it), else one on PATH.
    beside = Path(sys.executable).parent / "py-spy"
    spy_bin = str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"
    register, rcpts = broker_bench.sim_events(receipts, households, seed)
    env = broker_bench.Env("profile")
    out_dir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    raw = out_dir / "worker.txt"
    try:
        w = env.worker("bench-profile")
        env.load_register("bench-profile", register)
        backlog = broker_bench.encode_events(env.codec, rcpts)
        assert w.proc is not None
        spy = subprocess.Popen(  # noqa: S603 - our own dev dependency, fixed arguments
            [spy_bin, "record", "--pid", str(w.proc.pid), "--threads", "--gil", "-r", "50"]
            + ["-f", "raw", "-o", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # py-spy attaches
        if spy.poll() is not None:
            err = spy.stderr.read().decode(errors="replace") if spy.stderr else ""
            raise RuntimeError(f"py-spy could not sample the worker: {err.strip()[-300:]}")
        cpu0, t0 = proc_cpu_s(w.proc.pid), time.monotonic()
        env.produce(backlog)
        env.wait_idle("bench-profile", timeout=1800, settle=0.5)
        cpu, seconds = proc_cpu_s(w.proc.pid) - cpu0, time.monotonic() - t0
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        spy.wait(60)
        counts = classify(raw.read_text().splitlines())
    finally:
        env.close()
        shutil.rmtree(out_dir, ignore_errors=True)
    table = shares(counts)
    header(
        f"where one worker's time goes (py-spy, {len(backlog):,}-receipt backlog)",
        "samples",
        "share %",
        "",
    )
    for name, n, pct in table:
        row(f"  {name}" if name.startswith(f"{STAGE}: ") else name, fmt(n), fmt(pct, 1))
    return {
        "receipts": len(backlog),
        "seconds": round(seconds, 1),
        "worker_cpu_s": round(cpu, 2),
        "receipts_per_worker_cpu_s": round(len(backlog) / cpu, 1) if cpu else None,
        "samples": sum(n for k, n in counts.items() if not k.startswith(f"{STAGE}: ")),
        "rate_hz": 50,
        "mode": "py-spy --gil: samples of the thread holding the GIL",
        "shares": [{"class": k, "samples": n, "percent": round(p, 1)} for k, n, p in table],
    }
