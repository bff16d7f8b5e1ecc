"""What the commands share: settings from flags, argument types, the audit arguments."""

from __future__ import annotations

import argparse
import signal
import time
from datetime import datetime
from typing import Any

from stream.settings import Settings, load_settings


def iso_to_ms(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone, e.g. {text}Z or {text}+02:00")
    return int(dt.timestamp() * 1000)


def month_arg(text: str) -> str:
    try:
        datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise argparse.ArgumentTypeError(f"month must be YYYY-MM, got {text!r}") from None
    return text


def settings_from(args: argparse.Namespace) -> Settings:
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


def wait_for_signal() -> None:
    stop = {"flag": False}

    def handler(_sig: int, _frame: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, handler)
    try:
        while not stop["flag"]:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


def default_operator() -> str:
    import getpass

    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator:unknown"


def add_audit_args(cmd: argparse.ArgumentParser, purpose: str) -> None:
    cmd.add_argument(
        "--requested-by", default=default_operator(), help="recorded in the audit trail"
    )
    cmd.add_argument("--purpose", default=purpose, help=f"recorded purpose (default {purpose})")
