"""``purchase-stream inspect`` on every topic of stream/local/topics.py, on the real broker,
through a
schema registry that requires basic auth over TLS (a certificate made by the test).

One record per topic, every string field holding a recognisable marker, is produced with the
project's codec; inspect must decode each one (Avro through the registry, JSON for the internal
topics), show no personal id and no key unless ``--reveal --purpose`` is given, and write exactly
one audit record per run, acknowledged before any record is shown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from stream.kafka_config import producer_config
from stream.local.registry_server import EmbeddedRegistryServer
from stream.local.topics import TOPICS
from stream.serde import schemas
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.tools.topic_view import inspect_topic, is_personal, read_records
from tests.tls_certs import make_certs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "inspect-svc", "inspect-registry-pa55"
MARK = "Q7Z"  # in every generated string: "<field>-Q7Z-<topic>"


def sample(node: Any, field: str, topic: str, named: dict[str, Any]) -> Any:
    """A value of Avro type ``node``: strings say which field and topic they are from."""
    if isinstance(node, str):
        if node in named:
            return sample(named[node], field, topic, named)
        return {
            "null": None,
            "boolean": True,
            "int": 3,
            "long": 1_700_000_000_000,
            "float": 1.5,
            "double": 2.5,
            "bytes": f"{field}-{MARK}-{topic}".encode(),
            "string": f"{field}-{MARK}-{topic}",
        }[node]
    if isinstance(node, list):  # a union: its first non-null branch
        branch = next((b for b in node if b != "null"), "null")
        return sample(branch, field, topic, named)
    kind = node["type"]
    if kind == "record":
        named[node["name"]] = node
        if "namespace" in node:
            named[f"{node['namespace']}.{node['name']}"] = node
        return {f["name"]: sample(f["type"], f["name"], topic, named) for f in node["fields"]}
    if kind == "enum":
        named[node["name"]] = node
        return node["symbols"][0]
    if kind == "array":
        return [sample(node["items"], field, topic, named)]
    if kind == "map":
        return {"k": sample(node["values"], field, topic, named)}
    if kind == "fixed":
        return b"\x00" * node["size"]
    return sample(kind, field, topic, named)  # {"type": "long", "logicalType": ...}


def value_for(topic: str) -> dict[str, Any]:
    spec = TOPICS[topic]
    if spec.schema is None:  # an internal JSON topic: ids as the topologies write them
        return {
            "customer_id": f"customer_id-{MARK}-{topic}",
            "household_id": f"household_id-{MARK}-{topic}",
            "card": {"card_number": f"card_number-{MARK}-{topic}", "role": "main"},
            "store_id": f"store_id-{MARK}-{topic}",
            "amount_cents": 1234,
        }
    return sample(schemas.schema(spec.schema), "", topic, {})


def personal_strings(value: Any, personal: bool = False) -> list[str]:
    """The marker strings found under personal field names (what must never be shown)."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in personal_strings(v, is_personal(k))]
    if isinstance(value, list):
        return [s for v in value for s in personal_strings(v, personal)]
    if isinstance(value, bytes):
        value = value.decode()
    return [value] if personal and isinstance(value, str) and MARK in value else []


@pytest.fixture(scope="module")
def world(broker_factory, tmp_path_factory):
    certs = make_certs(tmp_path_factory.mktemp("inspect-certs"))
    broker = broker_factory("inspect", topics=True)  # nobody else writes to these topics
    registry = EmbeddedRegistryServer(
        "127.0.0.1", 0, basic_auth=(USER, PASSWORD), certfile=certs.cert, keyfile=certs.key
    ).start()
    client = ConfluentRegistryClient(
        registry.url, username=USER, password=PASSWORD, ca_file=str(certs.ca)
    )
    codec = Codec(client)
    producer = Producer(producer_config(broker.bootstrap, **{"client.id": "inspect-test"}))
    sent: dict[str, dict[str, Any]] = {}
    for topic in TOPICS:
        value = value_for(topic)
        key = f"key-{MARK}-{topic}".encode()
        producer.produce(topic, key=key, value=codec.encode(topic, value))
        sent[topic] = value
    assert producer.flush(30) == 0
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PURCHASE_STREAM_")},
        "PYTHONPATH": str(ROOT),
        "PURCHASE_STREAM_BROKER": broker.bootstrap,
        "PURCHASE_STREAM_SCHEMA_REGISTRY_URL": registry.url,
        "PURCHASE_STREAM_SCHEMA_REGISTRY_USERNAME": USER,
        "PURCHASE_STREAM_SCHEMA_REGISTRY_PASSWORD": PASSWORD,
        "PURCHASE_STREAM_SCHEMA_REGISTRY_CA_FILE": str(certs.ca),
    }
    try:
        yield broker.bootstrap, codec, sent, env
    finally:
        registry.stop()


def audit_records(bootstrap: str, codec: Codec) -> list[dict[str, Any]]:
    msgs = read_records(
        bootstrap, "audit.log", from_beginning=True, max_records=None, idle_timeout_s=20
    )
    return [codec.decode("audit.log", m.value()) for m in msgs]


def test_inspect_decodes_every_topic_and_masks_personal_ids(world) -> None:
    bootstrap, codec, sent, _env = world
    runs = 0
    for topic, value in sent.items():
        out = StringIO()
        n = inspect_topic(
            bootstrap,
            codec,
            topic,
            out,
            from_beginning=True,
            idle_timeout_s=20,
            actor="operator:test",
            purpose="inspect_topic",
        )
        runs += 1
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        if topic == "audit.log":
            # our own audit records precede the test's record: the read is audited first
            assert n == len(lines) == runs + 1
            assert [r["value"]["action"] for r in lines].count("inspect_topic") == runs
            line = next(r for r in lines if r["value"]["action"] != "inspect_topic")
        else:
            assert n == len(lines) == 1, topic
            line = lines[0]
        assert (line["topic"], line.get("error")) == (topic, None)
        text = json.dumps(line)
        hidden = personal_strings(value)
        assert hidden or topic in ("product.catalog", "aggregates.group"), topic
        for secret in [*hidden, f"key-{MARK}-{topic}"]:
            assert secret not in text, (topic, secret)
        assert line["key"].startswith("~")
        # what is not an id is shown as it is: the record was decoded, not blanked
        shown = [s for s in _strings(value) if s not in hidden]
        assert shown and all(s in text for s in shown), topic

    audits = [r for r in audit_records(bootstrap, codec) if r["action"] == "inspect_topic"]
    assert len(audits) == runs == len(TOPICS)
    assert {json.loads(r["detail"])["topic"] for r in audits} == set(TOPICS)
    assert all(json.loads(r["detail"])["revealed"] is False for r in audits)


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) and MARK in value else []


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "inspect", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_cli_masks_the_dead_letters_and_reveals_only_with_a_purpose(world) -> None:
    bootstrap, codec, sent, env = world
    key = f"key-{MARK}-deadletters"
    masked = _cli(env, "deadletters", "--from-beginning", "--max", "1", "--idle-timeout", "20")
    assert masked.returncode == 0, masked.stderr
    record = json.loads(masked.stdout)
    assert key not in masked.stdout and MARK + "-deadletters" not in json.dumps(record["key"])
    for secret in personal_strings(sent["deadletters"]):
        assert secret not in masked.stdout

    refused = _cli(env, "deadletters", "--reveal")
    assert refused.returncode == 2 and "--purpose" in refused.stderr and refused.stdout == ""

    before = len(audit_records(bootstrap, codec))
    revealed = _cli(
        env,
        "deadletters",
        "--from-beginning",
        "--max",
        "1",
        "--reveal",
        "--purpose",
        "incident INC-42: why was this record dead-lettered",
        "--requested-by",
        "operator:alice",
    )
    assert revealed.returncode == 0, revealed.stderr
    assert json.loads(revealed.stdout)["key"] == key
    after = audit_records(bootstrap, codec)
    assert len(after) == before + 1
    # audit.log has no key: records spread over the partitions, so find it by its purpose
    [last] = [r for r in after if r["purpose"].startswith("incident INC-42")]
    assert (last["action"], last["actor"]) == ("inspect_topic", "operator:alice")
    assert json.loads(last["detail"]) == {
        "topic": "deadletters",
        "revealed": True,
        "from_beginning": True,
        "max": 1,
    }
    assert PASSWORD not in revealed.stderr + masked.stderr


def test_the_cli_refuses_wrong_registry_credentials_and_unknown_topics(world) -> None:
    _bootstrap, _codec, _sent, env = world
    wrong = _cli({**env, "PURCHASE_STREAM_SCHEMA_REGISTRY_PASSWORD": "nope"}, "deadletters")
    assert wrong.returncode == 2 and "refused the credentials" in wrong.stderr
    assert wrong.stdout == ""
    unknown = _cli(env, "no.such.topic", "--max", "1")
    assert unknown.returncode == 2 and "unknown topic" in unknown.stderr


def test_new_records_only_without_from_beginning(world) -> None:
    bootstrap, codec, _sent, _env = world
    out = StringIO()
    started = time.monotonic()
    n = inspect_topic(
        bootstrap,
        codec,
        "pos.receipts",
        out,
        idle_timeout_s=3,
        actor="operator:test",
        purpose="inspect_topic",
    )
    assert n == 0 and out.getvalue() == "" and time.monotonic() - started < 30


def test_last_records_and_one_record_by_partition_and_offset(world) -> None:
    """The runbook's ways to find a record: the last N, and the one at a partition/offset."""
    bootstrap, codec, _sent, _env = world
    producer = Producer(producer_config(bootstrap, **{"client.id": "inspect-test-2"}))
    offsets: list[int] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None
        offsets.append(msg.offset())

    for i in range(3):
        value = {**value_for("recall.notifications"), "recall_id": f"R-{i}"}
        producer.produce(
            "recall.notifications",
            key=f"R-{i}/C-{MARK}".encode(),
            value=codec.encode("recall.notifications", value),
            partition=2,
            on_delivery=delivered,
        )
    assert producer.flush(30) == 0

    def run(**kwargs: Any) -> list[dict[str, Any]]:
        out = StringIO()
        inspect_topic(
            bootstrap,
            codec,
            "recall.notifications",
            out,
            idle_timeout_s=20,
            actor="operator:test",
            purpose="inspect_topic",
            **kwargs,
        )
        return [json.loads(line) for line in out.getvalue().splitlines()]

    one = run(partition=2, offset=offsets[1], max_records=1)
    assert [(r["partition"], r["offset"]) for r in one] == [(2, offsets[1])]
    assert one[0]["value"]["recall_id"] == "R-1"
    last = run(last=2)
    assert [r["value"]["recall_id"] for r in last if r["partition"] == 2] == ["R-1", "R-2"]
    assert all(sum(r["partition"] == p for r in last) <= 2 for p in range(4))
    assert all(MARK not in r["key"] for r in last)
