"""The Quix Streams peer (runs in benchmarks/.venv-quix: quixstreams pins confluent-kafka<2.13).

The same work per receipt over the broker as the Faust worker (``stream/engine/agents.py``), done
by one Quix Streams ``Application``:

- one StreamingDataFrame per input topic of every non-global stage of
  ``topologies.pipeline.STAGES`` (pos.receipts and customer.cards -> card_join;
  receipts.identified, customer.consents and recall.requests -> personal_routing;
  aggregates.contributions -> group_aggregates; receipts.totals -> household_bonus). Each
  record runs through the project's own ``stream.engine.runner.Runner.process`` for its stage (same
  Runner, ``Codec`` over ``ConfluentRegistryClient``, rules from ``stream.settings.load_rules()``,
  ``wall_clock=time.time`` as in the worker);
- every output is produced to its real topic with the Application's own producer (the one
  ``StreamingDataFrame.to_topic`` uses, which Quix flushes before it commits offsets, like
  Faust's buffer), keyed by the output's key bytes, with librdkafka's ``murmur2_random``
  partitioner (the Java/aiokafka key -> partition mapping; random for null keys, like
  aiokafka) and the source record's timestamp. Outputs that are stage inputs
  (receipts.identified, aggregates.contributions, receipts.totals, recall.requests) are
  consumed back from the broker by the downstream stage's dataframe: no in-process hop;
- state: one rocksdict database per stage per partition (as Faust's ``rocksdb://`` tables),
  and every ``set``/``delete`` also produces a changelog record (key, JSON value bytes or
  None) with an explicit partition to ``quix-peer-<stage>-changelog`` (created here:
  compacted, same partition count and compaction tuning as the Faust table changelogs),
  mirroring ``stream.engine.state.TableState``. Quix's own state and ``use_changelog_topics``
  cannot carry these steps: Quix's ``State`` is scoped to the message key and offers only
  get/set/delete/exists, while our steps read and write other keys of their partition
  (parking and expiry indexes, household ledgers) and scan key prefixes
  (``State.items(prefix)``). So the Application runs with ``use_changelog_topics=False``
  and the changelog traffic is produced by the adapter below;
- the catalogue: a dataframe on product.catalog runs the catalog stage into a memory state
  behind a ``CachedCatalog`` whose GTIN entry is invalidated per catalogue record, like
  ``stream/engine/catalog_feed.py`` in the worker (in this single-instance app the group
  holds all
  partitions, so it is the whole catalogue, as every Faust worker reads it);
- the stages' time-driven work (``Runner.tick``) runs every ``tick_interval_s`` (60 s,
  ``load_settings()`` as in the worker) on every partition, as the worker's timer does; Quix
  has no timers, so it is checked between records (it does not run while the app is idle).

card_join's packing of identified receipts and contributions per partition
(stream/engine/packing.py) as the worker's
batch loop does it, with the same code: a pack goes when BATCH_MAX of the stage's records
have been handled or BATCH_WITHIN_S after its first element, checked between records (Quix
has no batch hook), and at the stop. Not crash-safe as the worker is (Quix may commit a
receipt whose pack is not sent yet): a benchmark only.

Commits every 2.8 s (Faust's default commit interval; Quix's is 5 s), so the lag-0
completion condition used by benchmarks/peer.py waits at most as long after the last
record as it does for the Faust worker.

Usage: quix_peer.py BOOTSTRAP REGISTRY_URL STATE_DIR GROUP PARTITIONS REGISTER_RECORDS

Prints {"ready": true} once it has read REGISTER_RECORDS register records; on SIGTERM it
stops, flushes and prints one JSON line with its counts (records in per topic, outputs per
topic, changelog records per stage).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient, NewTopic
from quixstreams import Application, message_context

from stream.engine import packing
from stream.engine.packing import BATCH_MAX, BATCH_WITHIN_S
from stream.engine.partitioning import key_bytes_partition
from stream.engine.runner import RawRecord, Runner
from stream.engine.state import CachedCatalog, RocksState
from stream.kafka_config import client_config
from stream.local.topic_admin import COMPACT_TUNING
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.settings import load_rules, load_settings
from topologies import catalog as catalog_topology
from topologies.pipeline import STAGES, Stage
from topologies.state import MemoryState

COMMIT_INTERVAL_S = 2.8  # faust.App default (commit_interval)


def changelog_topic(stage: Stage) -> str:
    return f"quix-peer-{stage.name}-changelog"


class ChangelogState(RocksState):
    """One partition of a stage's state: rocksdict + a changelog record per write, exactly
    what ``stream.engine.state.TableState`` does in the worker."""

    def __init__(self, path: Path, produce: Any, topic: str, partition: int, count: Counter):  # type: ignore[type-arg]
        super().__init__(path)
        self._produce = produce
        self._topic = topic
        self._partition = partition
        self._count = count

    def set(self, key: str, value: Any) -> None:
        k, v = key.encode(), orjson.dumps(value)
        self.db.put(k, v)
        self._produce(topic=self._topic, key=k, value=v, partition=self._partition)
        self._count[self._topic] += 1

    def delete(self, key: str) -> None:
        k = key.encode()
        self.db.delete(k)
        self._produce(topic=self._topic, key=k, value=None, partition=self._partition)
        self._count[self._topic] += 1


def create_changelogs(bootstrap: str, partitions: int) -> None:
    admin = AdminClient(client_config(bootstrap))
    new = [
        NewTopic(
            changelog_topic(s),
            num_partitions=partitions,
            replication_factor=1,
            config={"cleanup.policy": "compact", **COMPACT_TUNING},
        )
        for s in STAGES
        if not s.is_global
    ]
    for name, fut in admin.create_topics(new, operation_timeout=30).items():
        try:
            fut.result(35)
        except Exception as exc:  # noqa: BLE001 - an existing topic is fine
            if "already exists" not in str(exc).lower():
                raise RuntimeError(f"creating {name}: {exc}") from exc


def main() -> None:
    bootstrap, registry_url, state_dir, group, parts, register = sys.argv[1:7]
    partitions = int(parts)
    expected_register = int(register)
    create_changelogs(bootstrap, partitions)

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=COMMIT_INTERVAL_S,
        state_dir=state_dir + "/quix",
        use_changelog_topics=False,
        auto_create_topics=False,
        producer_extra_config={"partitioner": "murmur2_random"},
        loglevel="WARNING",
    )
    # The Application's producer: what StreamingDataFrame.to_topic() produces with, flushed
    # by Quix's checkpoint before the consumer offsets are committed.
    produce = app._producer.produce  # noqa: SLF001 - no public handle to it

    records_in: Counter[str] = Counter()
    outputs: Counter[str] = Counter()
    changelog: Counter[str] = Counter()
    catalog_state = MemoryState()
    catalog = CachedCatalog(catalog_state, catalog_topology.key)
    runner = Runner(
        Codec(ConfluentRegistryClient(registry_url)),
        load_rules(),
        catalog=catalog,
        wall_clock=time.time,
    )
    states: dict[str, list[Any]] = {}
    for stage in STAGES:
        if stage.is_global:
            continue
        topic = changelog_topic(stage)
        states[stage.name] = [
            ChangelogState(Path(state_dir) / stage.name / str(p), produce, topic, p, changelog)
            for p in range(partitions)
        ]
    tick_interval = load_settings().tick_interval_s  # as the worker: file < environment
    next_tick = [time.monotonic() + tick_interval]
    register_seen = [0]

    def emit(outs: list[Any], timestamp: int | None) -> None:
        for out in outs:
            produce(topic=out.topic, key=out.key, value=out.value, timestamp=timestamp)
            outputs[out.topic] += 1

    # The worker's packing (stream/engine/packing.py): what card_join's receipt steps send
    # to one partition waits in a pack, sent when a worker batch would end: BATCH_MAX records of
    # the stage, or BATCH_WITHIN_S after the pack's first element (checked between records:
    # Quix has no batch hook; the stop sends what is left).
    packer = packing.Packer(
        runner.rules.record_limit, lambda _topic, key: key_bytes_partition(key, partitions)
    )
    batch: dict[str, float] = {"records": 0, "first": 0.0}

    def send_packs() -> None:
        for out, ts in packer.drain():
            emit([out], ts)
        batch["records"] = 0
        batch["first"] = 0.0

    def pack(stage: Stage, rec: RawRecord, outs: list[Any]) -> None:
        if stage.packs_from:
            batch["records"] += 1
        for out, ts in packing.sends(packer, stage, rec, outs):
            emit([out], ts)
        if len(packer) == 0:
            return
        now = time.monotonic()
        if batch["first"] == 0.0:
            batch["first"] = now
        if batch["records"] >= BATCH_MAX or now - batch["first"] >= BATCH_WITHIN_S:
            send_packs()

    def tick() -> None:
        now_ms = int(time.time() * 1000)
        for stage in STAGES:
            if stage.tick is None or stage.is_global:
                continue
            for p, state in enumerate(states[stage.name]):
                emit(runner.tick(stage, state, now_ms, p), None)

    def handler(stage: Stage, topic_name: str):  # type: ignore[no-untyped-def]
        is_catalog = stage.is_global
        is_register = topic_name in ("product.catalog", "customer.cards", "customer.consents")
        stage_states = None if is_catalog else states[stage.name]

        def fn(value, key, timestamp, headers):  # type: ignore[no-untyped-def]
            ctx = message_context()
            rec = RawRecord(topic_name, ctx.partition, ctx.offset, timestamp, key, value)
            if is_catalog:
                outs = runner.process(stage, catalog_state, rec)
                if key is not None:
                    catalog.invalidate(key.decode("utf-8", "replace"))
            else:
                outs = runner.process(stage, stage_states[ctx.partition], rec)  # type: ignore[index]
            pack(stage, rec, outs)
            records_in[topic_name] += 1
            if is_register:
                register_seen[0] += 1
                if register_seen[0] == expected_register:
                    print(json.dumps({"ready": True}), flush=True)
            if time.monotonic() >= next_tick[0]:
                next_tick[0] += tick_interval
                tick()

        return fn

    for stage in STAGES:
        for name in stage.inputs:
            topic = app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
            app.dataframe(topic).update(handler(stage, name), metadata=True)

    t0 = time.perf_counter()
    app.run()  # until SIGTERM/SIGINT; Quix commits (after flushing the producer) on stop
    send_packs()
    app._producer.flush()  # noqa: SLF001
    for per_stage in states.values():
        for s in per_stage:
            s.close()
    print(
        json.dumps(
            {
                "records_in": dict(sorted(records_in.items())),
                "outputs": dict(sorted(outputs.items())),
                "changelog": dict(sorted(changelog.items())),
                "wall_s": round(time.perf_counter() - t0, 2),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
