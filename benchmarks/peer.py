"""Figure 4, the peers, on the same broker and the same events as the worker figure.

- ``transport ceiling``: a plain confluent-kafka loop (consume pos.receipts -> produce the
  bytes unchanged to receipts.identified), no processing: what the client and broker cost.
- ``Faust worker``: one worker (``stream/engine/worker.py``), set up as the worker figure does it.
- ``Quix Streams``: benchmarks/quix_peer.py in its own venv (quixstreams 3.28 pins
  confluent-kafka < 2.13; the project pins 2.16.0): one Quix Application doing the same work
  per receipt over the broker as the worker (one dataframe per stage input running the
  project's Runner, every output produced and the internal hops consumed back from the
  broker, one changelog record per state write).

Both runtimes are timed by the same code (``_backlog``), with the clock of
``broker_bench.throughput``: from the first send of the receipt backlog until the group's
committed offsets reach the end of every stage input (lag 0). Both commit every 2.8 s. The
records each run added to every topic (outputs, and the table changelogs per stage) are
compared: equal counts show the two did the same work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from benchmarks import broker_bench as bb
from benchmarks.common import fmt, header, log, proc_cpu_s, row
from stream.kafka_config import client_config, producer_config
from stream.local.topics import TOPICS
from tests.integration.worker_harness import terminate
from topologies.pipeline import STAGES

ROOT = Path(__file__).resolve().parent.parent
QUIX_VENV = Path(__file__).resolve().parent / ".venv-quix"
# aiokafka: its murmur2 routes packs as the worker does (stream/engine/partitioning.py).
QUIX_PINS = [
    "quixstreams==3.28.1",
    "fastavro>=1.9,<2",
    "prometheus-client>=0.20,<1",
    "orjson",
    "aiokafka==0.14.0",
]


def quix_python() -> Path:
    py = QUIX_VENV / "bin" / "python"
    pins = QUIX_VENV / "pins.txt"
    wanted = "\n".join(QUIX_PINS)
    if not py.exists() or not pins.exists() or pins.read_text() != wanted:
        # resolve(): the venv may be a (dangling) symlink shared between worktrees.
        target = QUIX_VENV.resolve()
        log(f"creating/updating {target} ({' '.join(QUIX_PINS)})")
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *QUIX_PINS], check=True)
        pins.write_text(wanted)
    return py


def transport(env: bb.Env, backlog: list[Any]) -> dict[str, Any]:
    n = len(backlog)
    c = Consumer(
        client_config(
            env.bootstrap,
            **{
                "group.id": "bench-transport",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    p = Producer(producer_config(env.bootstrap, **{"client.id": "bench-transport"}))
    c.subscribe(["pos.receipts"])
    c.consume(1, timeout=5)  # join + assignment before the clock starts
    c.unsubscribe()
    c.subscribe(["pos.receipts"])
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    env.produce(backlog)
    done = 0
    deadline = time.monotonic() + 300
    while done < n and time.monotonic() < deadline:
        msgs = c.consume(1000, timeout=0.5)
        for m in msgs:
            if m.error():
                continue
            while True:
                try:
                    p.produce("receipts.identified", key=m.key(), value=m.value())
                    break
                except BufferError:
                    p.poll(0.05)
            done += 1
        p.poll(0)
        if msgs:
            c.commit(asynchronous=True)
    p.flush(30)
    elapsed = time.perf_counter() - t0
    c.close()
    return {
        "receipts": done,
        "seconds": round(elapsed, 2),
        "receipts_per_s": round(done / elapsed, 1),
        "note": "includes producing the backlog in the same process",
        "cpu_s": round(time.process_time() - cpu0, 2),
    }


def faust_hop(env: bb.Env, backlog: list[Any]) -> dict[str, Any]:
    """The transport loop as a Faust app with the worker's engine settings (faust_hop.py)."""
    from stream.local.reachability import free_port

    group = "bench-faust-hop"
    log_path = env.tmp / "faust-hop.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.faust_hop", env.bootstrap, group, str(free_port())],
        stdout=open(log_path, "wb"),  # noqa: SIM115 - owned by the child
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=str(ROOT),
    )
    hop = _QuixProcess(proc, log_path)
    env.workers.append(hop)  # type: ignore[arg-type] - Env only needs proc/log_tail/stop
    # Joined and assigned before the clock starts: one record through, lag 0.
    env.produce(backlog[:1])
    env.wait_idle(group, timeout=300, poll=0.5, topics=("pos.receipts",))
    out = _backlog(env, group, proc.pid, backlog, topics=("pos.receipts",))
    out["note"] = "consume pos.receipts -> produce unchanged, in Faust; no processing"
    return out


class _QuixProcess:
    """The Quix peer as an ``Env`` worker: ``Env.wait_idle`` watches it die, ``close`` stops it."""

    def __init__(self, proc: subprocess.Popen[str], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 60) -> int:
        return terminate(self.proc, timeout)


def _canonical(topic: str) -> str | None:
    """A topic's name in the per-topic counts: each side's table changelogs as
    ``changelog:<stage>`` (Faust: ``<app>-<stage>-store-changelog``, Quix peer:
    ``quix-peer-<stage>-changelog``); the registry's topics as they are."""
    if topic in TOPICS:
        return topic
    for stage in STAGES:
        if topic.endswith(f"-{stage.name}-store-changelog") or topic == (
            f"quix-peer-{stage.name}-changelog"
        ):
            return f"changelog:{stage.name}"
    return None


def _topic_counts(bootstrap: str) -> Counter[str]:
    """Records per topic now on the broker (sum of the partitions' high watermarks)."""
    c = Consumer(client_config(bootstrap, **{"group.id": "bench-peer-counts"}))
    try:
        out: Counter[str] = Counter()
        for name, t in c.list_topics(timeout=10).topics.items():
            canon = _canonical(name)
            if canon is None or t.error is not None:
                continue
            for p in t.partitions:
                out[canon] += c.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
        return out
    finally:
        c.close()


def _backlog(
    env: bb.Env,
    group: str,
    pid: int,
    backlog: list[Any],
    topics: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """The throughput clock of ``broker_bench.throughput``, the same for both runtimes: from
    the first send of the backlog to the moment the group's committed offsets first reach
    the end of every stage input (``Env.wait_idle``: ``stream.local.offsets.lag`` == 0, held 3 s),
    CPU of the runtime's process and of the broker over that span (plus the settle), and the
    records each topic gained (outputs per topic, table changelogs per stage)."""
    before = _topic_counts(env.bootstrap)
    cpu0 = proc_cpu_s(pid)
    bcpu0 = proc_cpu_s(env.broker.pid) if env.broker.pid else 0.0
    t0 = time.monotonic()
    env.produce(backlog)
    zero_at = env.wait_idle(group, timeout=3600, topics=topics)
    elapsed = zero_at - t0
    cpu = proc_cpu_s(pid) - cpu0
    bcpu = (proc_cpu_s(env.broker.pid) - bcpu0) if env.broker.pid else 0.0
    after = _topic_counts(env.bootstrap)
    n = len(backlog)
    return {
        "receipts": n,
        "seconds": round(elapsed, 2),
        "receipts_per_s": round(n / elapsed, 1),
        "worker_cpu_s": round(cpu, 2),
        "receipts_per_worker_cpu_s": round(n / cpu, 1) if cpu else None,
        "broker_cpu_s": round(bcpu, 2),
        "records_per_topic": {
            t: after[t] - before[t] for t in sorted(after) if after[t] - before[t]
        },
    }


def faust(env: bb.Env, register: list[Any], backlog: list[Any]) -> dict[str, Any]:
    """One Faust worker, set up as ``broker_bench.throughput`` does it."""
    w = env.worker("bench-peer")
    log(f"faust: producing the register ({len(register):,} events)")
    env.produce(bb.encode_events(env.codec, register))
    env.wait_idle("bench-peer", timeout=300)
    log("faust: caught up on the register; producing the receipt backlog")
    assert w.proc is not None
    return _backlog(env, "bench-peer", w.proc.pid, backlog)


def quix(env: bb.Env, register: list[Any], backlog: list[Any]) -> dict[str, Any]:
    py = quix_python()
    group = "bench-peer-quix"
    reg = bb.encode_events(env.codec, register)
    log_path = env.tmp / "quix.log"
    proc = subprocess.Popen(
        [
            str(py),
            str(ROOT / "benchmarks" / "quix_peer.py"),
            env.bootstrap,
            env.registry.url,
            str(env.tmp / "quix"),
            group,
            str(bb.PARTITIONS),
            str(len(reg)),
        ],
        stdout=subprocess.PIPE,
        stderr=open(log_path, "wb"),  # noqa: SIM115
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=str(ROOT),
    )
    peer = _QuixProcess(proc, log_path)
    env.workers.append(peer)  # type: ignore[arg-type] - Env only needs proc/log_tail/stop
    assert proc.stdout is not None
    log(f"quix: producing the register ({len(register):,} events)")
    env.produce(reg)
    if not proc.stdout.readline():
        proc.wait()
        raise RuntimeError(f"quix peer failed:\n{peer.log_tail()}")
    env.wait_idle(group, timeout=300)
    log("quix: caught up on the register; producing the receipt backlog")
    out = _backlog(env, group, proc.pid, backlog)
    peer.stop(timeout=60)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"quix peer gave no counts:\n{peer.log_tail()}")
    out["peer_counts"] = json.loads(line)  # its own view, register included
    out["receipts_per_cpu_s"] = out["receipts_per_worker_cpu_s"]
    return out


# Records whose number depends on where batches end (stream/engine/packing.py): the packs
# (identified receipts, contributions), the store-day aggregate sent once per pack, and the
# personal stores' compacted records, of which a pack sends the last per key (a duplicate
# receipt in the same pack re-sends its record once, not twice). Reported, not failed.
BATCH_DEPENDENT = frozenset(
    {
        "receipts.identified",
        "aggregates.contributions",
        "aggregates.group",
        "personal.line_items",
        "marketing.signals",
        "ereceipts.archive",
    }
)


def _compare(f: dict[str, Any], q: dict[str, Any]) -> dict[str, Any]:
    """Per topic, the records each run added to the broker for the same backlog.

    The registry's topics (the backlog itself, every output and the internal hops) must
    match exactly, but for ``BATCH_DEPENDENT``. The table changelogs also carry the stages'
    time-driven work (a sweep per partition every ``tick_interval_s`` of wall-clock time), so
    a run that lasts longer can write a few more changelog records; those differences are
    reported, not failed.
    """
    fc, qc = f["records_per_topic"], q["records_per_topic"]
    diff = {t: [fc.get(t, 0), qc.get(t, 0)] for t in sorted(set(fc) | set(qc))}
    mismatched = {t: v for t, v in diff.items() if v[0] != v[1]}
    outputs = {
        t: v
        for t, v in mismatched.items()
        if not t.startswith("changelog:") and t not in BATCH_DEPENDENT
    }
    return {
        "faust_quix": diff,
        "mismatched": mismatched,
        "same_work": not outputs,
        "changelog_difference": {
            t: v[0] - v[1] for t, v in mismatched.items() if t.startswith("changelog:")
        },
        "batch_dependent": {t: v for t, v in diff.items() if t in BATCH_DEPENDENT},
    }


def run(receipts: int, households: int, seed: int) -> dict[str, Any]:
    register, rcpts = bb.sim_events(receipts, households, seed)
    out: dict[str, Any] = {"receipts": receipts}
    header("peers on the same broker and events", "receipts/s", "rcpt/CPU-s")
    env = bb.Env("transport")
    try:
        t = transport(env, bb.encode_events(env.codec, rcpts))
        out["transport_ceiling"] = t
        row("confluent-kafka consume->produce, no processing", fmt(t["receipts_per_s"]), "-")
    finally:
        env.close()
    env = bb.Env("faust-hop")
    try:
        h = faust_hop(env, bb.encode_events(env.codec, rcpts))
        out["faust_hop"] = h
        row(
            "Faust consume->produce, no processing (worker's settings)",
            fmt(h["receipts_per_s"]),
            fmt(h["receipts_per_worker_cpu_s"]),
        )
    except Exception as exc:  # noqa: BLE001 - report, keep the other peers' figures
        out["faust_hop"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        log(f"faust hop failed: {exc}")
    finally:
        env.close()
    env = bb.Env("faust")
    try:
        f = faust(env, register, bb.encode_events(env.codec, rcpts))
        out["faust_worker"] = f
        row(
            "Faust worker (all stages, hops via the broker)",
            fmt(f["receipts_per_s"]),
            fmt(f["receipts_per_worker_cpu_s"]),
        )
    finally:
        env.close()
    env = bb.Env("quix")
    try:
        q = quix(env, register, bb.encode_events(env.codec, rcpts))
        out["quix"] = q
        row(
            "Quix Streams app (same stages, hops via the broker)",
            fmt(q["receipts_per_s"]),
            fmt(q["receipts_per_cpu_s"]),
        )
        out["ratio_faust_to_quix"] = round(f["receipts_per_s"] / q["receipts_per_s"], 3)
        row("Faust worker / Quix Streams peer, wall clock", f"{out['ratio_faust_to_quix']:.2f}")
        cmp = out["same_work"] = _compare(f, q)
        for t, (a, b) in cmp["faust_quix"].items():
            row(f"  records to {t} (Faust / Quix)", fmt(a), fmt(b))
        if not cmp["same_work"]:
            log(f"quix peer: NOT the same records per topic as Faust: {cmp['mismatched']}")
        elif cmp["changelog_difference"]:
            log(
                "same records on every registry topic; changelog records Faust - Quix "
                f"(timer sweeps): {cmp['changelog_difference']}"
            )
    except Exception as exc:  # noqa: BLE001 - report, keep the other peers' figures
        out["quix"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        log(f"quix peer failed: {exc}")
    finally:
        env.close()
    return out
