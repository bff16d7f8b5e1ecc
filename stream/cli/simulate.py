"""The simulator commands: ``pos`` (the POS gateway simulator) and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from stream.cli.common import settings_from


def _sim_config(args: argparse.Namespace) -> Any:
    from stream.simulator.config import SimConfig

    kwargs: dict[str, Any] = {
        "seed": args.seed,
        "households": args.households,
        "receipts": args.receipts,
    }
    if not args.out:
        # Producing live: the simulated clock starts now and runs at the production rate,
        # so broker timestamps are current (old ones fall outside the topics' retention).
        kwargs["start_ms"] = int(time.time() * 1000)
        if args.rate:
            kwargs["receipts_per_second"] = args.rate
    return SimConfig(**kwargs)


def cmd_pos(args: argparse.Namespace) -> int:
    from stream.simulator import generator as simulator

    cfg = _sim_config(args)
    events = simulator.generate(cfg)
    if args.out:

        def progress(n: int) -> None:
            print(f"\r  {n:,} events written", end="", file=sys.stderr, flush=True)

        n = simulator.write_jsonl(events, args.out, progress=progress)
        print(file=sys.stderr)
        print(f"wrote {n} events to {args.out}", file=sys.stderr)
        return 0
    from stream.serde.codec import Codec
    from stream.serde.schema_registry import check_access, registry_from_settings
    from stream.simulator.pos import produce

    settings = settings_from(args)
    registry = registry_from_settings(settings)
    check_access(registry)  # wrong credentials: exit 2 before connecting to Kafka
    codec = Codec(registry)
    stats = produce(
        events,
        bootstrap=settings.broker,
        codec=codec,
        rate=args.rate,
        progress=True,
        bad_bytes=simulator.bad_bytes_events() if args.bad_bytes else (),
    )
    print(json.dumps(stats, indent=2, default=str), file=sys.stderr)
    return 0 if not stats.get("delivery_errors") else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.local.demo import run_demo

    return run_demo(
        settings_from(args),
        duration=args.duration,
        rate=args.rate,
        households=args.households,
        receipts=args.receipts,
        seed=args.seed,
        keep=args.keep,
    )
