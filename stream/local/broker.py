"""The embedded Kafka-protocol broker for local runs, the demo and integration tests.

Production runs real Kafka (docker-compose); nothing in the project may depend on which broker
it talks to. Locally no Kafka distribution is available, so :class:`EmbeddedBroker` runs
noida-db (the binary shipped in the ``noida-db`` PyPI package) with only its Kafka service::

    with EmbeddedBroker(".noida", port=19200) as broker:
        create_topics(broker.bootstrap, partitions=4, replication_factor=1)
        ...

noida-db keeps its state as a JSON snapshot in the data dir, saved about a second after changes
and on SIGINT (written to ``kafka.tmp``, then renamed over ``kafka.json``). A big snapshot
takes long to write: 538 MB took 22 s from SIGINT to exit (measured), so
:meth:`EmbeddedBroker.stop` sends SIGINT and waits as long as the broker makes progress
(CPU time or the snapshot growing); only a broker that does nothing for ``stop_timeout``
seconds, or that is still busy after ``stop_ceiling`` seconds, is killed. SIGKILL can lose
acknowledged records. The broker's output goes to
``<data dir>/noida-db.log``, not the terminal. Its dynamic loader prints a harmless
``weak version `GLIBC_2.39' not found`` warning at start; it is filtered out of everything this
module reports.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

from stream.local.reachability import free_port, metadata_ok, port_open_at

__all__ = ["BrokerError", "EmbeddedBroker", "noida_binary"]

log = logging.getLogger(__name__)

LOG_NAME = "noida-db.log"
GLIBC_WARNING = "GLIBC_2.39"
DEFAULT_STARTUP_TIMEOUT_S = 30.0
# SIGKILL after this long without progress (no CPU time used, no snapshot bytes written).
DEFAULT_STOP_TIMEOUT_S = 15.0
# ... or after this long in all: a broker busy for ever is not saving.
DEFAULT_STOP_CEILING_S = 600.0
# How often stop() looks at the broker's progress, and reports it.
_STOP_POLL_S = 0.5
_STOP_REPORT_S = 10.0
_PORT_IN_USE = "already in use"
_PR_SET_PDEATHSIG = 1


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or stopped; the message says why."""


def noida_binary() -> Path:
    """Path of the noida-db executable inside the installed ``noida_db`` package."""
    try:
        import noida_db
    except ImportError as exc:
        raise BrokerError(
            "the noida-db package is not installed (pip install noida-db==0.2.3)"
        ) from exc
    name = "noida-db.exe" if os.name == "nt" else "noida-db"
    path = Path(noida_db.__file__).resolve().parent / name
    if not path.is_file():
        raise BrokerError(f"noida-db binary not found at {path}")
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | 0o111)
        except OSError as exc:
            raise BrokerError(f"noida-db binary at {path} is not executable: {exc}") from exc
    return path


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGINT the child when its parent dies (Linux).

    If the parent dies without stopping the broker (even by SIGKILL), noida-db then saves
    its snapshot and exits instead of lingering on the port. libc is resolved here, in the
    parent: importing or loading libraries between fork and exec can deadlock.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (ImportError, OSError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT))

    return preexec


class EmbeddedBroker:
    """noida-db with only its Kafka service, run as a child process.

    ``port=None`` picks a free port (and retries on a lost race). ``start()`` returns once the
    port accepts connections and a confluent-kafka metadata request succeeds; on failure it
    raises :class:`BrokerError` with the tail of the broker's log. ``stop()`` sends SIGINT and
    waits (SIGKILL only after ``stop_timeout`` seconds). ``parent_death_signal`` makes the
    kernel SIGINT the broker when the thread that started it dies (Linux); disable it when
    starting the broker from a short-lived thread.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
        stop_ceiling: float = DEFAULT_STOP_CEILING_S,
        binary: str | os.PathLike[str] | None = None,
        parent_death_signal: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self._requested_port = port
        self.port: int = port if port is not None else 0
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.stop_ceiling = stop_ceiling
        self._binary = Path(binary) if binary is not None else None
        self._pdeathsig = parent_death_signal
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0

    # --- properties -----------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients (Faust wants ``kafka://`` + this)."""
        if not self.port:
            raise BrokerError("the embedded broker has not been started, so it has no port")
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        binary = self._binary or noida_binary()
        return [
            str(binary),
            "start",
            "--data-dir",
            str(self.data_dir),
            "--host",
            self.host,
            "--only",
            "kafka",
            "--kafka-port",
            str(self.port),
        ]

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> EmbeddedBroker:
        """Start noida-db and wait until it serves Kafka metadata requests."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(1, attempts + 1):
            if self._requested_port is None:
                self.port = free_port(self.host)
            try:
                self._spawn_and_wait()
                return self
            except BrokerError:
                if attempt < attempts and _PORT_IN_USE in self.log_tail():
                    log.info("port %d was taken meanwhile; retrying on another", self.port)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn_and_wait(self) -> None:
        cmd = self.command()
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"\n--- {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        self._log_offset = self._log_file.tell()
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - the packaged noida-db, our arguments
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # a terminal Ctrl-C reaches us, and we stop it
                preexec_fn=_pdeathsig_preexec() if self._pdeathsig else None,
            )
        except OSError as exc:
            self._close_log()
            raise BrokerError(f"could not run {cmd[0]}: {exc}") from exc
        atexit.register(self.stop)
        log.info(
            "started noida-db pid %d on %s (data dir %s)", self.pid, self.bootstrap, self.data_dir
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        if self._proc is None:
            raise BrokerError("noida-db is not started")
        started = time.monotonic()
        deadline = started + self.startup_timeout
        port_open = False
        while True:
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(
                    f"noida-db exited with code {code} while starting on {self.bootstrap}; "
                    f"its output ({self.log_path}):\n{self.log_tail()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                what = "a Kafka metadata request" if port_open else "a TCP connection"
                raise BrokerError(
                    f"noida-db on {self.bootstrap} did not accept {what} within "
                    f"{self.startup_timeout:.0f} s; its output ({self.log_path}):\n"
                    f"{self.log_tail()}"
                )
            if not port_open:
                port_open = port_open_at(self.host, self.port, min(left, 0.5))
            # Short metadata attempts, so that an early exit (e.g. a port taken by another
            # program, which then accepts our TCP probe) is noticed within a second.
            if port_open and metadata_ok(self.bootstrap, min(left, 1.0)):
                log.info(
                    "noida-db ready on %s after %.2f s", self.bootstrap, time.monotonic() - started
                )
                return
            time.sleep(0.05)

    def stop(self) -> int | None:
        """SIGINT, then wait while the broker saves its snapshot; SIGKILL only if it hangs.

        It waits as long as the broker makes progress: its CPU time grows or a file in the
        data dir changes (the snapshot is written to ``kafka.tmp``). SIGKILL comes only after
        ``stop_timeout`` s without any progress, or ``stop_ceiling`` s in all. Returns the
        exit code (None if it was never started). Safe to call twice.
        """
        proc = self._proc
        if proc is None:
            return None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            self._wait_saved(proc)
        self._close_log()
        return proc.returncode

    def _progress(self, pid: int) -> tuple[int | None, tuple[tuple[str, int, int], ...]]:
        """(CPU ticks of the broker, (name, size, mtime) of its data files): what moves
        while it saves. CPU ticks are None where /proc is not available."""
        ticks: int | None = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            # After the ``(comm)`` field: utime and stime are fields 14 and 15 (1-based).
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])
        files: list[tuple[str, int, int]] = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.data_dir):
                if entry.name != LOG_NAME and entry.is_file():
                    st = entry.stat()
                    files.append((entry.name, st.st_size, st.st_mtime_ns))
        return ticks, tuple(sorted(files))

    def _wait_saved(self, proc: subprocess.Popen[bytes]) -> None:
        started = last_change = last_report = time.monotonic()
        seen = self._progress(proc.pid)
        while True:
            try:
                proc.wait(timeout=_STOP_POLL_S)
                return
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            current = self._progress(proc.pid)
            if current != seen:
                seen, last_change = current, now
            idle, total = now - last_change, now - started
            if idle >= self.stop_timeout or total >= self.stop_ceiling:
                why = (
                    f"did nothing for {idle:.0f} s"
                    if idle >= self.stop_timeout
                    else f"was still busy after {total:.0f} s"
                )
                log.warning(
                    "noida-db pid %d %s after SIGINT; killing it (unsaved records may be lost)",
                    proc.pid,
                    why,
                )
                proc.kill()
                proc.wait()
                return
            if now - last_report >= _STOP_REPORT_S:
                last_report = now
                tmp = sum(size for name, size, _ in current[1] if name.endswith(".tmp"))
                log.info(
                    "noida-db pid %d is saving its snapshot (%.0f s, %.0f MB written)",
                    proc.pid,
                    total,
                    tmp / 1e6,
                )

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of this run's broker output, without the harmless GLIBC warning."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no broker output)"
        kept = [ln for ln in text.splitlines() if GLIBC_WARNING not in ln]
        return "\n".join(kept[-lines:]) or "(no broker output)"

    # --- context manager ------------------------------------------------------------
    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"EmbeddedBroker({self.host}:{self.port or '?'}, {self.data_dir}, {state})"
