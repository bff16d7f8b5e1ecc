"""Figure 6, growth: the replay core's cost per receipt and memory as the stream grows.

One streaming run (events generated, encoded and fed one at a time, so the event list is
never held) in a child process, so the resident memory is the run's own. At each checkpoint
it records the CPU and wall time *of the feed calls only* for the segment since the previous
checkpoint, resident memory, and RocksDB bytes on disk: a flat cost per receipt means state
growth does not slow the hot path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import dir_bytes, fmt, header, log, proc_rss_bytes, row


def _child(checkpoints: list[int], households: int, seed: int) -> None:
    import os

    from stream.serde.codec import Codec
    from stream.serde.registry_store import InMemoryRegistry
    from stream.settings import load_rules
    from stream.simulator.config import SimConfig
    from stream.simulator.generator import generate
    from stream.tools.replay import Driver, encode_event

    state_dir = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    try:
        codec = Codec(InMemoryRegistry())
        driver = Driver(load_rules(), state_dir / "s", codec=codec)
        cfg = SimConfig(seed=seed, households=households, receipts=checkpoints[-1])
        receipts = lines = 0
        seg_wall = seg_cpu = 0.0
        seg_receipts = seg_lines = 0
        todo = list(checkpoints)
        for e in generate(cfg):
            try:
                topic, key, value, ts = encode_event(codec, e)
            except Exception:  # noqa: BLE001, S112 - deliberately broken simulator lines
                continue
            c0, t0 = time.process_time(), time.perf_counter()
            driver.feed(topic, key, value, ts)
            seg_wall += time.perf_counter() - t0
            seg_cpu += time.process_time() - c0
            if topic == "pos.receipts" and value is not None and e.get("value"):
                receipts += 1
                seg_receipts += 1
                n = len(e["value"].get("lines") or [])
                lines += n
                seg_lines += n
                if todo and receipts >= todo[0]:
                    todo.pop(0)
                    point = {
                        "receipts": receipts,
                        "line_items": lines,
                        "segment_receipts": seg_receipts,
                        "segment_wall_s": round(seg_wall, 3),
                        "segment_cpu_s": round(seg_cpu, 3),
                        "segment_receipts_per_s": round(seg_receipts / seg_wall, 1),
                        "segment_cpu_us_per_receipt": round(1e6 * seg_cpu / seg_receipts, 1),
                        "rss_bytes": proc_rss_bytes(os.getpid()),
                        "rocksdb_bytes": dir_bytes(state_dir / "s"),
                    }
                    print(json.dumps(point), flush=True)
                    seg_wall = seg_cpu = 0.0
                    seg_receipts = seg_lines = 0
                    if not todo:
                        break
        driver.close()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def run(checkpoints: list[int], households: int, seed: int = 11) -> dict[str, Any]:
    header(
        "growth: replay core cost per receipt as the stream grows",
        "receipts/s",
        "CPU us/receipt",
        "RSS MB",
        "RocksDB MB",
    )
    log(f"growth: streaming run to {checkpoints[-1]:,} receipts, checkpoints {checkpoints}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.growth", json.dumps(checkpoints), str(households)]
        + [str(seed)],
        stdout=subprocess.PIPE,
        text=True,
    )
    points = []
    assert proc.stdout is not None
    for line in proc.stdout:
        p = json.loads(line)
        points.append(p)
        row(
            f"{p['receipts']:,} receipts (segment of {p['segment_receipts']:,})",
            fmt(p["segment_receipts_per_s"]),
            fmt(p["segment_cpu_us_per_receipt"]),
            fmt(p["rss_bytes"] / 2**20),
            fmt(p["rocksdb_bytes"] / 1e6, 1),
        )
    if proc.wait() != 0:
        raise RuntimeError(f"growth child exited {proc.returncode}")
    first, last = points[0], points[-1]
    drift = last["segment_cpu_us_per_receipt"] / first["segment_cpu_us_per_receipt"]
    row("CPU cost per receipt, last segment / first", f"{drift:.2f}")
    return {"households": households, "points": points, "cpu_cost_last_over_first": round(drift, 3)}


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
