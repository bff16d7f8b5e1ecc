"""Figure 4, the peers, on the same broker and the same events as the worker figure.

- ``transport ceiling``: a plain confluent-kafka loop (consume pos.receipts -> produce the
  bytes unchanged to receipts.identified), no processing: what the client and broker cost.
- ``Quix Streams``: benchmarks/quix_peer.py in its own venv (quixstreams 3.28 pins
  confluent-kafka < 2.13; the project pins 2.16.0), running the project's topology code.
- ``Faust worker``: the one-worker figure, re-measured here on the same events.

Every rate is timed from the first send of the receipt backlog to the last receipt done.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from benchmarks import broker_bench as bb
from benchmarks.common import fmt, header, log, proc_cpu_s, row
from stream.pos import producer_config

ROOT = Path(__file__).resolve().parent.parent
QUIX_VENV = Path(__file__).resolve().parent / ".venv-quix"
QUIX_PINS = ["quixstreams==3.28.1", "fastavro>=1.9,<2", "prometheus-client>=0.20,<1", "orjson"]


def quix_python() -> Path:
    py = QUIX_VENV / "bin" / "python"
    if not py.exists():
        log(f"creating {QUIX_VENV} ({' '.join(QUIX_PINS)})")
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *QUIX_PINS], check=True)
    return py


def transport(env: bb.Env, backlog: list[Any]) -> dict[str, Any]:
    n = len(backlog)
    c = Consumer(
        {
            "bootstrap.servers": env.bootstrap,
            "group.id": "bench-transport",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
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


def quix(env: bb.Env, register: list[Any], backlog: list[Any]) -> dict[str, Any]:
    py = quix_python()
    reg = bb._encode(env.codec, register)
    env.produce(reg)
    proc = subprocess.Popen(
        [
            str(py),
            str(ROOT / "benchmarks" / "quix_peer.py"),
            env.bootstrap,
            env.registry.url,
            str(env.tmp / "quix"),
            str(len(backlog)),
            str(len(reg)),
        ],
        stdout=subprocess.PIPE,
        stderr=open(env.tmp / "quix.log", "wb"),  # noqa: SIM115
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first:
        proc.wait()
        raise RuntimeError(f"quix peer failed:\n{(env.tmp / 'quix.log').read_text()[-3000:]}")
    log("quix: caught up on the register; producing the receipt backlog")
    cpu0 = proc_cpu_s(proc.pid)
    t0 = time.perf_counter()
    env.produce(backlog)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - t0
    cpu = None
    with contextlib.suppress(OSError):
        cpu = proc_cpu_s(proc.pid) - cpu0
    proc.wait(60)
    if not line:
        raise RuntimeError(f"quix peer failed:\n{(env.tmp / 'quix.log').read_text()[-3000:]}")
    r = json.loads(line)
    n = r["receipts"]
    return {
        "receipts": n,
        "outputs": r["outputs"],
        "seconds": round(elapsed, 2),
        "receipts_per_s": round(n / elapsed, 1),
        "receipts_per_cpu_s": round(n / cpu, 1) if cpu else None,
    }


def run(receipts: int, households: int, seed: int) -> dict[str, Any]:
    register, rcpts = bb._events(receipts, households, seed)
    out: dict[str, Any] = {"receipts": receipts}
    header("peers on the same broker and events", "receipts/s", "rcpt/CPU-s")
    env = bb.Env("transport")
    try:
        t = transport(env, bb._encode(env.codec, rcpts))
        out["transport_ceiling"] = t
        row("confluent-kafka consume->produce, no processing", fmt(t["receipts_per_s"]), "-")
    finally:
        env.close()
    env = bb.Env("faust")
    try:
        f = bb.throughput(env, ["bench-peer"], register, rcpts, "faust")
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
        q = quix(env, register, bb._encode(env.codec, rcpts))
        out["quix"] = q
        row(
            "Quix Streams app (same steps, hops in process)",
            fmt(q["receipts_per_s"]),
            fmt(q["receipts_per_cpu_s"]),
        )
        out["ratio_faust_to_quix"] = round(f["receipts_per_s"] / q["receipts_per_s"], 3)
        row("Faust worker / Quix Streams peer (target >= 1.0)", f"{out['ratio_faust_to_quix']:.2f}")
    except Exception as exc:  # noqa: BLE001 - report, keep the other peers' figures
        out["quix"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        log(f"quix peer failed: {exc}")
    finally:
        env.close()
    return out
