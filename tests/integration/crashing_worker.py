"""A worker whose output producer fails on one receipt (test-only; run with ``-m``).

Test-only. It runs the real ``purchase-stream worker`` after replacing
``stream.engine.output.Output.send`` with one that raises when a record's value contains the marker
``R-CRASH``: a failure *after* the runner (where no dead letter can cover it), as a produce
the client refuses would be. The commit rule says the worker must then stop with a non-zero
exit, before anything after that record is committed.
"""

from __future__ import annotations

import sys

from stream.cli import main
from stream.engine import output

MARKER = b"R-CRASH"
_send = output.Output.send


def _failing_send(self, topic, key, value, *args, **kwargs):  # type: ignore[no-untyped-def]
    if topic == "receipts.identified" and value is not None and MARKER in value:
        raise RuntimeError("injected produce failure")
    return _send(self, topic, key, value, *args, **kwargs)


output.Output.send = _failing_send  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(["worker"]))
