"""``purchase-stream`` command line: worker, broker, topics, pos, demo, replay, produce, dump,
extract, bonus, recall, token, config, inspect.

One module per group of commands (:mod:`.infra`, :mod:`.simulate`, :mod:`.data`,
:mod:`.requests`), the parser in :mod:`.parser`; ``stream.cli:main`` is the console entry
point and ``python -m stream.cli`` runs it too.
"""

from __future__ import annotations

import logging
import os
import select
import sys

from stream.cli.parser import build_parser
from stream.settings import SettingsError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    from stream.serde.registry_store import RegistryAccessError

    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except (SettingsError, RegistryAccessError) as exc:
        # Configuration, not an outage: one line naming what to fix (never a secret).
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # some other pipe or socket: a real error
        # The reader of our output went away (`purchase-stream extract ... | head -1`): exit
        # quietly, as CPython's documentation recommends (signal module, "Note on SIGPIPE"):
        # point stdout at devnull so the flush at exit does not fail again, and exit 1.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _stdout_closed() -> bool:
    """True if stdout is a pipe whose reader has gone (POLLERR on the write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real stdout: cannot tell, assume it is
        return True
