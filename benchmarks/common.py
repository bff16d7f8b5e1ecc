"""Shared pieces of the benchmark suite: the workload, timing, results file, table printing."""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

from stream.serde.codec import Codec
from stream.serde.registry_store import InMemoryRegistry
from stream.serde.schemas import schema as parsed_schema
from stream.simulator.config import SimConfig
from stream.simulator.generator import generate
from stream.tools.replay import encode_event

RESULTS = Path(__file__).resolve().parent / "results"
LATEST = RESULTS / "latest.json"


def log(msg: str) -> None:
    """Progress output (stderr, so the tables on stdout stay clean)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


@dataclass
class Workload:
    """Simulated events, encoded once as the POS would send them (Confluent wire format)."""

    receipts: int
    households: int
    seed: int
    events: list[dict[str, Any]]
    encoded: list[tuple[str, bytes | None, bytes | None, int]]
    codec: Codec
    receipt_bodies: list[bytes] = field(default_factory=list)
    line_items: int = 0

    @property
    def n_receipts(self) -> int:
        return len(self.receipt_bodies)


def workload(receipts: int, households: int, seed: int = 11) -> Workload:
    t0 = time.perf_counter()
    events = list(generate(SimConfig(seed=seed, households=households, receipts=receipts)))
    codec = Codec(InMemoryRegistry())
    encoded = []
    for e in events:
        with contextlib.suppress(Exception):  # the simulator's deliberately broken lines
            encoded.append(encode_event(codec, e))
    bodies = [v[5:] for (t, _k, v, _ts) in encoded if t == "pos.receipts" and v]
    schema = parsed_schema("fi.coop.purchase.Receipt")
    lines = 0
    for b in bodies:
        r = fastavro.schemaless_reader(io.BytesIO(b), schema, schema)
        lines += len(r["lines"])  # type: ignore[index,arg-type]
    w = Workload(receipts, households, seed, events, encoded, codec, bodies, lines)
    log(
        f"workload: {len(events):,} events, {w.n_receipts:,} receipt records, {lines:,} line "
        f"items ({lines / max(w.n_receipts, 1):.1f}/receipt), {time.perf_counter() - t0:.1f} s"
    )
    return w


@dataclass
class Timing:
    wall_s: float
    cpu_s: float  # this process's CPU time over the same interval


def timed(fn: Callable[[], Any]) -> Timing:
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return Timing(time.perf_counter() - t0, time.process_time() - c0)


def rates(n_receipts: int, line_items: int, t: Timing) -> dict[str, float]:
    """Wall-clock rates, plus the rate per CPU-second (robust to a busy shared machine)."""
    return {
        "seconds": round(t.wall_s, 3),
        "cpu_seconds": round(t.cpu_s, 3),
        "receipts_per_s": round(n_receipts / t.wall_s, 1),
        "line_items_per_s": round(line_items / t.wall_s, 1),
        "receipts_per_cpu_s": round(n_receipts / t.cpu_s, 1) if t.cpu_s > 0 else None,
    }


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _threads(pid: int) -> list[int]:
    """The thread ids of process ``pid`` (Linux: /proc/<pid>/task)."""
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Put every thread of process ``pid`` on ``cpus`` (Linux).

    ``sched_setaffinity`` of a pid moves only that one thread. Threads started later
    inherit their creator's set. A thread that ended meanwhile is skipped.
    """
    for tid in _threads(pid):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, cpus)


def thread_affinities(pid: int) -> list[set[int]]:
    """The CPU set of every thread of process ``pid``."""
    out = []
    for tid in _threads(pid):
        with contextlib.suppress(ProcessLookupError):
            out.append(os.sched_getaffinity(tid))
    return out


@contextlib.contextmanager
def own_core(pinned: list[int], rest: list[int]) -> Iterator[dict[str, Any]]:
    """Give the processes ``pinned`` one CPU of their own and ``rest`` the others.

    The worker figures run the broker, the worker(s) and the load generator on the same two
    cores; this separates the worker from the rest for the "one worker on one core" reading
    (benchmarks/results/2026-12-07-diary.md, section 5). Everything gets the harness's original CPU
    set back on exit. Raises RuntimeError with fewer than two CPUs.
    """
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        raise RuntimeError(f"own_core needs two CPUs, this process may use {len(allowed)}")
    cpus = sorted(allowed)
    mine, others = {cpus[-1]}, set(cpus[:-1])
    try:
        for pid in pinned:
            set_affinity(pid, mine)
        for pid in rest:
            set_affinity(pid, others)
        yield {"worker_cpus": sorted(mine), "other_cpus": sorted(others)}
    finally:
        for pid in [*pinned, *rest]:
            with contextlib.suppress(OSError):
                set_affinity(pid, allowed)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def row(label: str, *cols: str) -> None:
    print(f"  {label:<52}" + "".join(f"{c:>16}" for c in cols), flush=True)


def header(title: str, *cols: str) -> None:
    print(f"\n== {title}", flush=True)
    row("figure", *cols)


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


class Results:
    """One latest.json for the whole run; every figure writes its section as soon as it ends."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.data: dict[str, Any] = {
            "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "args": args,
            "machine": machine(),
            "figures": {},
        }

    def put(self, name: str, section: dict[str, Any]) -> None:
        self.data["figures"][name] = section
        self.save()

    def save(self) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        tmp = LATEST.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(LATEST)
