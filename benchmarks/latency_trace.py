"""``python -m benchmarks.latency_trace``: where a latency tail comes from, half a second at a time.

One worker on a fresh embedded broker with the register of ``--households`` loaded, an
optional receipt backlog drained first (the state the suite's latency runs used to start
from), then ``--rate`` receipts/s for ``--seconds`` (``broker_bench.latency``). Meanwhile:

- a ping probe sends a 1-byte record every 10 ms to a topic of its own and times it back
  (one hop through the broker, no worker): the broker's own latency at that moment;
- a watcher notes every write of the broker's data files: noida-db rewrites a JSON snapshot
  of everything it holds a second or so after changes (``kafka.tmp`` growing, then renamed
  to ``kafka.json``).

It prints the percentiles, the worker's and the broker's CPU, and a row per 500 ms: the
slowest and median receipt sent in it, the same for the pings, and the snapshot writes that
finished in it. ``--own-core`` gives the worker one CPU and the broker and this process
the other(s) (``benchmarks.common.own_core``). benchmarks/results/2026-12-07-diary.md, section 5,
has what it showed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks import broker_bench as bb
from benchmarks.common import log, own_core
from stream.kafka_config import client_config, producer_config

PING_TOPIC = "bench.ping"


class SnapshotWatch(threading.Thread):
    """(time, file name, size) of every change of the files in the broker's data dir."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(daemon=True)
        self.data_dir = data_dir
        self.changes: list[tuple[float, str, int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        last: dict[str, tuple[float, int]] = {}
        while not self.stop_event.is_set():
            for p in self.data_dir.iterdir():
                if p.name not in ("kafka.json", "kafka.tmp"):
                    continue
                with contextlib.suppress(OSError):
                    st = p.stat()
                    sig = (st.st_mtime, st.st_size)
                    if last.get(p.name) != sig:
                        if p.name in last:
                            self.changes.append((time.time(), p.name, st.st_size))
                        last[p.name] = sig
            time.sleep(0.01)


class Ping:
    """A record every ``period`` s through the broker and back: (send time, latency s)."""

    def __init__(self, bootstrap: str, period: float = 0.01) -> None:
        self.bootstrap, self.period = bootstrap, period
        self.samples: list[tuple[float, float]] = []
        self.sent: dict[bytes, float] = {}
        self.stop_event = threading.Event()
        self.assigned = threading.Event()
        self.threads = [
            threading.Thread(target=self._consume, daemon=True),
            threading.Thread(target=self._produce, daemon=True),
        ]

    def start(self) -> None:
        self.threads[0].start()
        if not self.assigned.wait(30):
            raise RuntimeError("the ping consumer got no partition in 30 s")
        time.sleep(1.0)  # "latest" is resolved after the assignment
        self.threads[1].start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(10)

    def _consume(self) -> None:
        c = Consumer(
            client_config(
                self.bootstrap,
                **{
                    "group.id": f"bench-ping-{time.time_ns()}",
                    "auto.offset.reset": "latest",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 10,
                },
            )
        )
        c.subscribe([PING_TOPIC], on_assign=lambda *_: self.assigned.set())
        while not self.stop_event.is_set():
            for m in c.consume(100, timeout=0.05):
                now = time.time()
                k = m.key()
                if not m.error() and k in self.sent:
                    self.samples.append((self.sent[k], now - self.sent[k]))
        c.close()

    def _produce(self) -> None:
        p = Producer(producer_config(self.bootstrap, **{"client.id": "ping", "linger.ms": 1}))
        p.produce(PING_TOPIC, key=b"warm", value=b"x")
        p.flush(10)
        i = 0
        while not self.stop_event.is_set():
            k = str(i).encode()
            self.sent[k] = time.time()
            p.produce(PING_TOPIC, key=k, value=b"x")
            p.poll(0)
            i += 1
            time.sleep(self.period)
        p.flush(5)


def _pcts(vals: list[float]) -> str:
    if not vals:
        return "none"
    v = sorted(vals)
    n = len(v)
    return (
        f"n={n} p50={v[n // 2] * 1000:.0f} p95={v[int(0.95 * n)] * 1000:.0f} "
        f"p99={v[int(0.99 * n)] * 1000:.0f} max={v[-1] * 1000:.0f} ms"
    )


def _ms(vals: list[float], q: float) -> str:
    return f"{sorted(vals)[int(q * (len(vals) - 1))] * 1000:.0f}" if vals else "-"


def trace(
    households: int, backlog: int, rate: float, seconds: float, own: bool, seed: int = 11
) -> dict[str, Any]:
    register, rcpts = bb.sim_events(backlog + int(rate * seconds) + 1000, households, seed)
    env = bb.Env("trace")
    try:
        admin = AdminClient(client_config(env.bootstrap))
        admin.create_topics([NewTopic(PING_TOPIC, 1, 1)])[PING_TOPIC].result()
        if backlog:
            bb.throughput(env, ["bench-trace"], register, rcpts[:backlog], "trace")
        else:
            env.worker("bench-trace")
            env.load_register("bench-trace", register)
        w, broker_pid = env.workers[0].proc, env.broker.pid
        assert w is not None and broker_pid is not None
        data_dir = Path(env.broker.data_dir)
        snapshot_mb = sum(p.stat().st_size for p in data_dir.glob("*.json")) / 1e6
        log(f"broker data files before: {snapshot_mb:.0f} MB")
        pinning: contextlib.AbstractContextManager[Any] = (
            own_core([w.pid], [broker_pid, os.getpid()]) if own else contextlib.nullcontext()
        )
        with pinning:
            watch, ping = SnapshotWatch(data_dir), Ping(env.bootstrap)
            watch.start()
            ping.start()
            time.sleep(1.0)
            series: list[tuple[float, float]] = []
            t0 = time.time()
            lat = bb.latency(env, rcpts[backlog:], rate, seconds, wait=30, series=series)
            ping.stop()
            watch.stop_event.set()
            watch.join(5)
    finally:
        env.close()
    print(f"\n{'worker on its own core' if own else 'shared cores'}, {rate:.0f}/s offered")
    last_sent = max((s for s, _ in series), default=t0 + seconds)
    print(
        f"receipts: p50={lat['p50_ms']} p95={lat['p95_ms']} p99={lat['p99_ms']} "
        f"max={lat['max_ms']} ms, missing {lat['missing_after_wait']} of {lat['sent']} "
        "(missing receipts count as slower than every receipt seen)"
    )
    print(f"pings:    {_pcts([v for s, v in ping.samples if t0 <= s <= last_sent])}")
    print(
        f"CPU-s per second of sending: worker {lat['worker_cpu_per_s']}, "
        f"broker {lat['broker_cpu_per_s']}"
    )
    print("\n  from s   receipts max / p50 ms   pings max / p50 ms   snapshot writes done")
    t = t0
    while t <= last_sent:
        rv = [v for s, v in series if t <= s < t + 0.5]
        pv = [v for s, v in ping.samples if t <= s < t + 0.5]
        wrote = [
            f"{sz / 1e6:.0f} MB"
            for ts, n, sz in watch.changes
            if t <= ts < t + 0.5 and n == "kafka.json"
        ]
        print(
            f"  {t - t0:6.1f}   {_ms(rv, 1):>8} / {_ms(rv, 0.5):>5}   "
            f"{_ms(pv, 1):>8} / {_ms(pv, 0.5):>5}   {' '.join(wrote)}"
        )
        t += 0.5
    return lat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.latency_trace", description=__doc__)
    ap.add_argument("--households", type=int, default=20_000)
    ap.add_argument("--backlog", type=int, default=0, help="receipts drained before the run")
    ap.add_argument("--rate", type=float, default=400.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--own-core", action="store_true", help="the worker on a CPU of its own")
    args = ap.parse_args(argv)
    trace(args.households, args.backlog, args.rate, args.seconds, args.own_core)
    return 0


if __name__ == "__main__":
    sys.exit(main())
