"""Moving and reading topic data: ``replay``, ``produce``, ``dump``, ``inspect``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stream.cli.common import settings_from
from stream.settings import load_rules


def cmd_replay(args: argparse.Namespace) -> int:
    from stream.tools.replay import replay_file

    if not Path(args.events).is_file():
        print(f"error: no such events file: {args.events}", file=sys.stderr)
        return 2
    summary = replay_file(
        args.events,
        load_rules(),
        args.state_dir,
        now_ms=args.now,
        out_path=args.out,
        progress=sys.stderr,
    )
    print(json.dumps(summary.as_dict(), indent=2))
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from stream.serde.codec import Codec
    from stream.serde.schema_registry import registry_from_settings
    from stream.simulator.pos import BrokerUnavailableError, ProducerFatalError
    from stream.tools.replay_io import produce_file

    if not Path(args.events).is_file():
        print(f"error: no such events file: {args.events}", file=sys.stderr)
        return 2
    settings = settings_from(args)
    codec = Codec(registry_from_settings(settings))
    try:
        stats = produce_file(
            args.events, bootstrap=settings.broker, codec=codec, progress=sys.stderr
        )
    except BrokerUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ProducerFatalError as exc:
        # What was sent before it stays on the broker; a second run re-sends the whole file,
        # which every stage takes as redeliveries.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=2))
    failed = stats["bad_lines"] or stats["delivery_errors"] or stats["undelivered"]
    return 1 if failed else 0


def cmd_dump(args: argparse.Namespace) -> int:
    from stream.serde.codec import Codec
    from stream.serde.schema_registry import registry_from_settings
    from stream.tools.replay import INPUT_TOPICS
    from stream.tools.replay_io import dump

    settings = settings_from(args)
    codec = Codec(registry_from_settings(settings))
    topics = args.topic or list(INPUT_TOPICS)
    if args.out and args.out != "-":
        with open(args.out, "wb") as out:
            stats = dump(settings.broker, codec, out, topics, progress=sys.stderr)
    else:
        stats = dump(settings.broker, codec, sys.stdout.buffer, topics, progress=sys.stderr)
        sys.stdout.buffer.flush()
    print(json.dumps(stats), file=sys.stderr)
    return 1 if stats["skipped"] else 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from stream.serde.codec import Codec
    from stream.serde.schema_registry import check_access, registry_from_settings
    from stream.tools.topic_view import InspectError, inspect_topic

    if args.reveal and not args.purpose:
        print("error: --reveal needs --purpose (recorded in the audit trail)", file=sys.stderr)
        return 2
    if args.offset is not None and args.partition is None:
        print("error: --offset needs --partition", file=sys.stderr)
        return 2
    settings = settings_from(args)
    registry = registry_from_settings(settings)
    check_access(registry)
    try:
        inspect_topic(
            settings.broker,
            Codec(registry),
            args.topic,
            sys.stdout,
            from_beginning=args.from_beginning,
            max_records=args.max,
            idle_timeout_s=args.idle_timeout,
            last=args.last,
            partition=args.partition,
            offset=args.offset,
            reveal=args.reveal,
            actor=args.requested_by,
            purpose=args.purpose or "inspect_topic",
        )
    except InspectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
