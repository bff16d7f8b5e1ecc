"""Running the pipeline: ``worker``, ``broker`` (embedded broker and registry), ``topics``,
``config``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stream.cli.common import settings_from, wait_for_signal
from stream.settings import load_rules


def cmd_worker(args: argparse.Namespace) -> int:
    from stream.engine.worker import run_worker
    from stream.local.reachability import is_reachable

    settings = settings_from(args)
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
    from stream.local.broker import EmbeddedBroker
    from stream.local.provision import create_local_topics
    from stream.local.registry_server import EmbeddedRegistryServer

    settings = settings_from(args)
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
        wait_for_signal()
    finally:
        registry.stop()
        broker.stop()
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from stream.local.topic_admin import create_topics

    settings = settings_from(args)
    result = create_topics(settings.broker, settings.partitions, settings.replication_factor)
    for name, status in sorted(result.items()):
        print(f"{status:8} {name}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """The effective settings (file < environment < flags) as JSON, secrets masked."""
    print(json.dumps(settings_from(args).public_dict(), indent=2, sort_keys=True))
    return 0
