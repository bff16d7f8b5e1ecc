"""Does the embedded broker keep every record it acknowledged across a clean restart?

A standalone probe (not a test: the defect it shows is noida-db's, see docs/reliability.md,
finding 4c). It fills a fresh broker with ``--preload`` records, produces a steady stream,
stops the broker cleanly (SIGINT, waiting for its snapshot) in the middle of the stream,
starts it again on the same data and port, and counts the records whose delivery was
acknowledged but which the topic no longer holds::

    PYTHONPATH=. .venv/bin/python -m tests.integration.broker_restart_probe /tmp/probe
    # measured 2026-12-07, noida-db 0.2.3, 100,000 records of 500 B preloaded: the stop took
    # 4-11 s, and 172-179 of the records acknowledged meanwhile were gone after the restart

With an almost empty broker the stop takes milliseconds and nothing is lost.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Producer

from stream.local.broker import EmbeddedBroker
from stream.local.offsets import read_all
from stream.local.reachability import free_port
from stream.local.topic_admin import create_topics

TOPIC = "pos.receipts"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir", type=Path, help="emptied first")
    p.add_argument("--preload", type=int, default=100_000, help="records of 500 B before")
    p.add_argument("--idempotent", action="store_true", help="idempotent producer")
    args = p.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    broker = EmbeddedBroker(args.workdir / "broker", port=free_port()).start()
    try:
        create_topics(broker.bootstrap, 4, 1, names=[TOPIC])
        preload = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
        for i in range(args.preload):
            while True:
                try:
                    preload.produce(TOPIC, key=str(i).encode(), value=b"x" * 500)
                    break
                except BufferError:
                    preload.poll(0.1)
        preload.flush(300)

        acked: set[bytes] = set()
        errors: list[str] = []
        stop = threading.Event()

        def delivered(err: KafkaError | None, msg: object) -> None:
            if err is None:
                acked.add(msg.value())  # type: ignore[attr-defined]
            else:
                errors.append(str(err))

        def stream() -> None:
            producer = Producer(
                {
                    "bootstrap.servers": broker.bootstrap,
                    "acks": "all",
                    "enable.idempotence": args.idempotent,
                    "linger.ms": 5,
                    "message.timeout.ms": 300_000,
                }
            )
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    producer.produce(TOPIC, key=str(n % 50).encode(), value=f"r{n}".encode(),
                                     on_delivery=delivered)  # fmt: skip
                except KafkaException as exc:  # the idempotent producer's fatal error
                    errors.append(repr(exc))
                    break
                producer.poll(0)
                time.sleep(0.02)
            try:
                producer.flush(60)
            except KafkaException as exc:
                errors.append(repr(exc))

        sender = threading.Thread(target=stream)
        sender.start()
        time.sleep(5)
        before = len(acked)
        began = time.monotonic()
        code = broker.stop()
        took = time.monotonic() - began
        broker.start()
        time.sleep(5)
        stop.set()
        sender.join()
        held = {r.value for r in read_all(broker.bootstrap, TOPIC, timeout=120)}
        lost = sorted(acked - held, key=lambda v: int(v[1:]))
        print(f"stop: exit {code} after {took:.1f} s ({before} records acknowledged before it)")
        print(f"acknowledged {len(acked)}, in the topic after the restart {len(acked & held)}")
        print(
            f"acknowledged but gone: {len(lost)}"
            + (f" ({lost[0]!r}..{lost[-1]!r})" if lost else "")
        )
        print(f"delivery errors: {len(errors)} {errors[:1]}")
        return 1 if lost else 0
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
