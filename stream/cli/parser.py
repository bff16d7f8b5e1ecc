"""The ``purchase-stream`` argument parser: every command, its flags and its handler."""

from __future__ import annotations

import argparse

from stream.cli.common import add_audit_args, default_operator, iso_to_ms, month_arg
from stream.cli.data import cmd_dump, cmd_inspect, cmd_produce, cmd_replay
from stream.cli.infra import cmd_broker, cmd_config, cmd_topics, cmd_worker
from stream.cli.requests import cmd_bonus, cmd_extract, cmd_recall, cmd_token
from stream.cli.simulate import cmd_demo, cmd_pos


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
    r.add_argument("--now", type=iso_to_ms, help="move the processing clock here at the end")
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
    bo.add_argument("--month", required=True, type=month_arg, help="YYYY-MM (Helsinki time)")
    bo.set_defaults(func=cmd_bonus)
    add_audit_args(bo, "customer_request")

    e = sub.add_parser("extract", help="register extract of one customer (JSON; audited)")
    e.add_argument("--state-dir", required=True)
    e.add_argument("--customer", required=True, help="customer id")
    add_audit_args(e, "register_extract_request")
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
    rc.add_argument(
        "--requested-by", default=default_operator(), help="recorded in the audit trail"
    )
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
    ins.add_argument(
        "--requested-by", default=default_operator(), help="recorded in the audit trail"
    )
    ins.add_argument("--purpose", help="why the records are read (required with --reveal)")
    ins.set_defaults(func=cmd_inspect)
    return p
