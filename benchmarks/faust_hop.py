"""The Faust engine's own cost for one hop: consume pos.receipts, produce the bytes unchanged.

``python -m benchmarks.faust_hop BOOTSTRAP GROUP WEB_PORT`` runs a Faust app with the
worker's engine settings and adapters (``stream/engine/app.py``: the same consumer settings,
idle-fetch wait, ``take_events`` batch, Faust producer flush and the confluent-kafka output
producer chained to it) and one agent that forwards every record of ``pos.receipts`` to
``receipts.identified`` without decoding it. Beside the plain confluent-kafka loop doing the
same (the transport ceiling, benchmarks/peer.py), it is what the engine itself costs per
event; the worker needs about four such hops per receipt (pos.receipts,
receipts.identified, aggregates.contributions, receipts.totals).
"""

from __future__ import annotations

import sys
from typing import Any

import faust

from stream.engine.agents import BATCH_MAX, BATCH_WITHIN_S, RAW
from stream.engine.observability import faust_sensors
from stream.engine.output import Output, attach
from stream.engine.patches import idle_fetch_wait, strict_producer_flush
from stream.engine.worker import use_event_loop


def main(argv: list[str]) -> None:
    bootstrap, group, web_port = argv[0], argv[1], int(argv[2])
    # The worker's event loop (settings.event_loop), also from PURCHASE_STREAM_EVENT_LOOP.
    from stream.kafka_config import configure
    from stream.settings import load_settings

    settings = load_settings()
    use_event_loop(settings.event_loop)
    security = configure(settings)  # the worker's TLS/SASL, for Faust's and Output's clients
    strict_producer_flush()
    idle_fetch_wait()
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        broker_credentials=security.faust_credentials(),
        topic_partitions=4,
        topic_disable_leader=True,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=20.0,
        stream_buffer_maxsize=4096,
        web_port=web_port,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
    )
    from prometheus_client import CollectorRegistry

    faust_sensors(app, CollectorRegistry())
    output = Output(bootstrap, f"{group}-output")
    attach(app, output)
    source = app.topic("pos.receipts", **RAW)

    async def hop(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            for event in events:
                msg = event.message
                output.send(
                    "receipts.identified",
                    msg.key,
                    msg.value,
                    timestamp_ms=int(msg.timestamp * 1000),
                )
            output.poll()

    app.agent(source, name="hop", concurrency=1)(hop)
    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
