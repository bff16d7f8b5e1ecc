"""``purchase-stream`` command line: worker, broker, topics, pos, demo, replay, produce, dump,
extract, bonus, recall, token, config, inspect.

One module per group of commands (:mod:`.infra`, :mod:`.simulate`, :mod:`.data`,
:mod:`.requests`), the parser in :mod:`.parser`; ``stream.cli:main`` is the console entry
point and ``python -m stream.cli`` runs it too.
"""

from __future__ import annotations

import logging
import sys

from stream.cli.parser import build_parser
from stream.settings import SettingsError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    from stream.serde.schema_registry import RegistryAccessError

    try:
        return int(args.func(args))
    except (SettingsError, RegistryAccessError) as exc:
        # Configuration, not an outage: one line naming what to fix (never a secret).
        print(f"error: {exc}", file=sys.stderr)
        return 2
