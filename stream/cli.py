"""``purchase-stream`` command line: worker, broker, topics, pos, demo, replay, produce, dump,
extract, bonus, recall, token, config, inspect."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from stream.settings import Settings, SettingsError, load_rules, load_settings


def _iso_to_ms(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone, e.g. {text}Z or {text}+02:00")
    return int(dt.timestamp() * 1000)


def _settings(args: argparse.Namespace) -> Settings:
    from stream.kafka_config import configure

    settings = load_settings(
        broker=getattr(args, "broker", None),
        schema_registry_url=getattr(args, "registry", None),
        state_dir=getattr(args, "worker_state_dir", None),
        web_port=getattr(args, "web_port", None),
        partitions=getattr(args, "partitions", None),
    )
    configure(settings)  # TLS/SASL for every Kafka client this command makes
    return settings


def cmd_worker(args: argparse.Namespace) -> int:
    from stream.engine.worker import run_worker
    from stream.local.broker import is_reachable

    settings = _settings(args)
    if not is_reachable(settings.broker, timeout=5):
        print(
            f"error: no Kafka broker at {settings.broker}. Start one with "
            "`purchase-stream broker` (embedded) or set PURCHASE_STREAM_BROKER.",
            file=sys.stderr,
        )
        return 2
    sys.argv = [sys.argv[0], "worker"]  # Faust's Worker parses argv; keep ours out of it
    run_worker(settings, load_rules())
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    """Embedded broker + schema registry in the foreground, topics created; Ctrl-C stops."""
    from stream.local.admin import create_local_topics
    from stream.local.broker import EmbeddedBroker
    from stream.local.registry_server import EmbeddedRegistryServer

    settings = _settings(args)
    data_dir = Path(args.data_dir or settings.embedded_data_dir)
    port = int(settings.broker.rsplit(":", 1)[1]) if args.port is None else args.port
    broker = EmbeddedBroker(data_dir / "broker", port=port).start()
    reg_port = args.registry_port or int(settings.schema_registry_url.rsplit(":", 1)[1])
    registry = EmbeddedRegistryServer("127.0.0.1", reg_port, data_dir / "schemas.json")
    registry.start()
    try:
        created = create_local_topics(broker.bootstrap, settings)
        print(f"broker   {broker.bootstrap}  (noida-db, data in {data_dir / 'broker'})")
        print(f"registry {registry.url}")
        print(
            f"topics   {sum(v == 'created' for v in created.values())} created, "
            f"{sum(v == 'exists' for v in created.values())} existed"
        )
        print("Ctrl-C to stop.", flush=True)
        _wait_for_signal()
    finally:
        registry.stop()
        broker.stop()
    return 0


def _wait_for_signal() -> None:
    stop = {"flag": False}

    def handler(_sig: int, _frame: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, handler)
    try:
        while not stop["flag"]:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


def cmd_topics(args: argparse.Namespace) -> int:
    from stream.local.admin import create_topics

    settings = _settings(args)
    result = create_topics(settings.broker, settings.partitions, settings.replication_factor)
    for name, status in sorted(result.items()):
        print(f"{status:8} {name}")
    return 0


def _sim_config(args: argparse.Namespace) -> Any:
    from stream.simulator.generator import SimConfig

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

    settings = _settings(args)
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
        _settings(args),
        duration=args.duration,
        rate=args.rate,
        households=args.households,
        receipts=args.receipts,
        seed=args.seed,
        keep=args.keep,
    )


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
    settings = _settings(args)
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

    settings = _settings(args)
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


def cmd_extract(args: argparse.Namespace) -> int:
    from stream.serve.extract import ExtractError, extract
    from stream.tools.replay import append_audit

    try:
        data = extract(args.state_dir, args.customer, load_rules())
    except ExtractError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    append_audit(
        args.state_dir, args.requested_by, "read_extract", args.customer, args.purpose, "ok", {}
    )
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from stream.serve import auth

    settings = _settings(args)
    try:
        print(
            auth.issue(
                settings.api_jwt_secret,
                args.sub,
                role=args.role,
                ttl_s=args.ttl,
            )
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_recall(args: argparse.Namespace) -> int:
    from stream.serve.api import recall_request

    try:
        request = recall_request(
            args.gtin, args.from_date, args.to_date, args.reason or "", args.requested_by
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.state_dir:
        from stream.tools.replay import recall_on_state

        if not (Path(args.state_dir) / "personal_routing").is_dir():
            print(f"error: {args.state_dir} has no replay state", file=sys.stderr)
            return 2
        found = recall_on_state(args.state_dir, load_rules(), request)
        for notification in found:
            print(json.dumps(notification, ensure_ascii=False))
        print(
            f"recall {request['recall_id']}: {len(found)} customer(s) to notify; audit records "
            f"appended to {Path(args.state_dir) / 'audit.log.jsonl'}",
            file=sys.stderr,
        )
        return 0
    from stream.simulator.pos import send_recall_request

    settings = _settings(args)
    send_recall_request(settings, request)
    print(json.dumps({"recall_id": request["recall_id"], "partitions": settings.partitions}))
    print(
        "sent to every partition of recall.requests; the workers write the notifications to "
        "recall.notifications (key <recall_id>/<customer_id>) and the audit trail to audit.log",
        file=sys.stderr,
    )
    return 0


def cmd_bonus(args: argparse.Namespace) -> int:
    from stream.engine.state import RocksState
    from stream.serve.queries import household_bonus_month
    from topologies import household_bonus

    stage_dir = Path(args.state_dir) / household_bonus.STAGE
    if not stage_dir.is_dir():
        print(
            f"error: {args.state_dir} has no Bonus ledger state (run `replay` first)",
            file=sys.stderr,
        )
        return 2
    from stream.tools.replay import append_audit

    state = RocksState(stage_dir)
    try:
        print(json.dumps(household_bonus_month(state, args.household, args.month), indent=2))
    finally:
        state.close()
    append_audit(
        args.state_dir,
        args.requested_by,
        "read_household_bonus",
        None,
        args.purpose,
        "ok",
        {"month": args.month},
    )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """The effective settings (file < environment < flags) as JSON, secrets masked."""
    print(json.dumps(_settings(args).public_dict(), indent=2, sort_keys=True))
    return 0


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
    settings = _settings(args)
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


def _month(text: str) -> str:
    try:
        datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise argparse.ArgumentTypeError(f"month must be YYYY-MM, got {text!r}") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="purchase-stream",
        description="Consent-aware purchase event processing (see README.md).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def infra(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--broker", help="Kafka bootstrap servers (default: settings)")
        sp.add_argument("--registry", help="schema registry URL (default: settings)")
        sp.add_argument("--partitions", type=int, help="partitions per topic (default: settings)")

    def sim(sp: argparse.ArgumentParser, receipts: int) -> None:
        sp.add_argument("--seed", type=int, default=7)
        sp.add_argument("--households", type=int, default=2000)
        sp.add_argument("--receipts", type=int, default=receipts)

    w = sub.add_parser("worker", help="run the Faust worker")
    infra(w)
    w.add_argument("--state-dir", dest="worker_state_dir", help="RocksDB state directory")
    w.add_argument("--web-port", type=int, help="HTTP port (metrics at /metrics)")
    w.set_defaults(func=cmd_worker)

    b = sub.add_parser("broker", help="run the embedded broker + schema registry (local)")
    infra(b)
    b.add_argument("--port", type=int, help="Kafka port (default: the port in settings.broker)")
    b.add_argument("--registry-port", type=int)
    b.add_argument("--data-dir", help="where the broker keeps its data")
    b.set_defaults(func=cmd_broker)

    t = sub.add_parser("topics", help="create every topic of the registry (idempotent)")
    infra(t)
    t.set_defaults(func=cmd_topics)

    pos = sub.add_parser("pos", help="POS gateway: simulate receipts and produce them")
    infra(pos)
    sim(pos, 100_000)
    pos.add_argument(
        "--rate", type=float, help="receipts per second (default: as fast as possible)"
    )
    pos.add_argument("--out", help="write a replay JSONL file instead of producing")
    pos.add_argument("--bad-bytes", action="store_true", help="also send undecodable records")
    pos.set_defaults(func=cmd_pos)

    d = sub.add_parser("demo", help="broker, topics, worker and simulator with a live summary")
    sim(d, 2_000_000)
    d.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="receipts per second (default 50: steady on 2 cores)",
    )
    d.add_argument("--duration", type=float, help="stop after this many seconds (exit 0)")
    d.add_argument("--keep", action="store_true", help="keep the demo's data directory")
    d.add_argument("--partitions", type=int)
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("replay", help="run a JSONL event file through the topology in-process")
    r.add_argument("events", help="JSONL file: {topic, key, value, timestamp} per line")
    r.add_argument("--state-dir", required=True, help="RocksDB state directory (created)")
    r.add_argument("--now", type=_iso_to_ms, help="move the processing clock here at the end")
    r.add_argument("--out", help="also write every output record (decoded) to this JSONL file")
    r.set_defaults(func=cmd_replay)

    pr = sub.add_parser(
        "produce", help="send a replay file's records to their topics (backfill; idempotent)"
    )
    infra(pr)
    pr.add_argument("events", help="JSONL file: {topic, key, value | value_b64, timestamp}")
    pr.set_defaults(func=cmd_produce)

    du = sub.add_parser("dump", help="write what the input topics hold as a replay file")
    infra(du)
    du.add_argument("--out", help="replay file to write (default: stdout)")
    du.add_argument(
        "--topic",
        action="append",
        choices=("product.catalog", "customer.cards", "customer.consents", "pos.receipts"),
        help="only this input topic (repeatable; default: all four)",
    )
    du.set_defaults(func=cmd_dump)

    bo = sub.add_parser("bonus", help="a household's Bonus for a month, from replay state (JSON)")
    bo.add_argument("--state-dir", required=True)
    bo.add_argument("--household", required=True, help="household id")
    bo.add_argument("--month", required=True, type=_month, help="YYYY-MM (Helsinki time)")
    bo.set_defaults(func=cmd_bonus)

    for cmd in (bo,):
        _audited(cmd, "customer_request")

    e = sub.add_parser("extract", help="register extract of one customer (JSON; audited)")
    e.add_argument("--state-dir", required=True)
    e.add_argument("--customer", required=True, help="customer id")
    _audited(e, "register_extract_request")
    e.set_defaults(func=cmd_extract)

    t = sub.add_parser("token", help="mint an API bearer token (dev/test; needs api_jwt_secret)")
    t.add_argument("--sub", required=True, help="customer id, or staff id with --role staff")
    t.add_argument("--role", choices=("customer", "staff"), default="customer")
    t.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    t.set_defaults(func=cmd_token)

    rc = sub.add_parser(
        "recall",
        help="product recall: every customer who bought GTIN in the window (audited)",
    )
    rc.add_argument("--gtin", required=True)
    rc.add_argument("--from", dest="from_date", required=True, help="YYYY-MM-DD (Helsinki)")
    rc.add_argument("--to", dest="to_date", required=True, help="YYYY-MM-DD, inclusive")
    rc.add_argument("--reason", help="why the product is recalled (shown to customers)")
    rc.add_argument(
        "--state-dir",
        help="run on the state `replay` left (notifications to stdout); default: send the "
        "request to the broker's workers",
    )
    rc.add_argument("--requested-by", default=_operator(), help="recorded in the audit trail")
    rc.set_defaults(func=cmd_recall)

    cf = sub.add_parser("config", help="print the effective settings as JSON (secrets masked)")
    infra(cf)
    cf.set_defaults(func=cmd_config)

    ins = sub.add_parser(
        "inspect",
        help="a topic's records as JSON lines, personal ids masked (audited)",
    )
    infra(ins)
    ins.add_argument("topic", help="a topic of stream/local/topics.py")
    ins.add_argument(
        "--from-beginning",
        action="store_true",
        help="read from the first record to the end as of now (default: new records only)",
    )
    ins.add_argument("--last", type=int, help="the last N records of each partition")
    ins.add_argument("--partition", type=int, help="only this partition")
    ins.add_argument("--offset", type=int, help="from this offset of --partition")
    ins.add_argument("--max", type=int, help="stop after this many records")
    ins.add_argument(
        "--idle-timeout", type=float, help="stop after this many seconds without a record"
    )
    ins.add_argument(
        "--reveal",
        action="store_true",
        help="print ids as they are (needs --purpose; audited)",
    )
    ins.add_argument("--requested-by", default=_operator(), help="recorded in the audit trail")
    ins.add_argument("--purpose", help="why the records are read (required with --reveal)")
    ins.set_defaults(func=cmd_inspect)
    return p


def _operator() -> str:
    import getpass

    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator:unknown"


def _audited(cmd: argparse.ArgumentParser, purpose: str) -> None:
    cmd.add_argument("--requested-by", default=_operator(), help="recorded in the audit trail")
    cmd.add_argument("--purpose", default=purpose, help=f"recorded purpose (default {purpose})")


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


if __name__ == "__main__":
    sys.exit(main())
