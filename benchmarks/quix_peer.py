"""The Quix Streams peer (runs in benchmarks/.venv-quix: quixstreams pins confluent-kafka<2.13).

A Quix Streams Application consumes the same input topics as the worker and runs every
record through the project's own topology code (``stream.replay.Driver``: the same Runner
and stage steps, RocksDB state through rocksdict), producing every output record with
Quix's producer. Prints one JSON line with its counts when the input is drained.

Usage: quix_peer.py BOOTSTRAP REGISTRY_URL STATE_DIR RECEIPTS REGISTER_RECORDS

Prints {"ready": true} once it has read REGISTER_RECORDS register records.
"""

from __future__ import annotations

import json
import sys
import time

from quixstreams import Application

from stream.codec import Codec
from stream.replay import Driver
from stream.schema_registry import HttpRegistryClient
from stream.settings import load_rules

bootstrap, registry_url, state_dir, expected, register = sys.argv[1:6]
expected_receipts = int(expected)
expected_register = int(register)

app = Application(
    broker_address=bootstrap,
    consumer_group=f"quix-peer-{time.time_ns()}",
    auto_offset_reset="earliest",
    state_dir=state_dir + "/quix",
    use_changelog_topics=False,
    auto_create_topics=False,
    loglevel="WARNING",
)
producer = app.get_producer()
count = {"receipts": 0, "register": 0, "out": 0, "first": 0.0, "last": 0.0}


def sink(out) -> None:  # type: ignore[no-untyped-def]
    producer.produce(topic=out.topic, key=out.key, value=out.value)
    count["out"] += 1


driver = Driver(
    load_rules(), state_dir + "/driver", codec=Codec(HttpRegistryClient(registry_url)), sink=sink
)


inputs = ("product.catalog", "customer.cards", "customer.consents", "pos.receipts")
for name in inputs:
    topic = app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
    sdf = app.dataframe(topic)

    def make(tname: str):  # type: ignore[no-untyped-def]
        def fn(value, key, timestamp, headers):  # type: ignore[no-untyped-def]
            if tname != "pos.receipts":
                count["register"] += 1
                if count["register"] == expected_register:
                    print(json.dumps({"ready": True}), flush=True)
            else:
                if count["receipts"] == 0:
                    count["first"] = time.perf_counter()
                count["receipts"] += 1
            driver.feed(tname, key, value, timestamp)
            if tname == "pos.receipts" and count["receipts"] >= expected_receipts:
                count["last"] = time.perf_counter()
                producer.flush()
                app.stop()
            return value

        return fn

    sdf.update(make(name), metadata=True)

t0 = time.perf_counter()
app.run()
producer.flush()
print(
    json.dumps(
        {
            "receipts": count["receipts"],
            "outputs": count["out"],
            "seconds_first_to_last": count["last"] - count["first"],
            "wall_s": time.perf_counter() - t0,
        }
    ),
    flush=True,
)
