"""Kafka administration from the topic registry: create/check topics, offsets, lag, read-back.

Used by ``purchase-stream topics`` (docker-compose's one-shot ``topics`` service and the local
demo), the demo's lag summary and the integration tests. Everything here speaks the plain
Kafka protocol through confluent-kafka, so it works the same on real Kafka and on the embedded
broker (:mod:`stream.local.broker`).

Topics are never left to broker auto-creation: an auto-created topic gets the broker's default
partition count (noida-db: 1) and policy, which silently breaks co-partitioned joins and the
compaction of personal data. :func:`create_topics` therefore creates every registry topic
explicitly and refuses to accept an existing topic whose partition count or cleanup policy
differs from the registry.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from stream.engine.patches import PARTITION_EOF
from stream.kafka_config import client_config
from stream.local.topics import LOCAL_KEEP_WHOLE, LOCAL_SEGMENT_MS, TOPICS, TopicSpec

log = logging.getLogger(__name__)

# Compacted topics hold personal data whose deletion (tombstones for revoked consent and
# erasure) must become physical in bounded time, and default Kafka settings compact lazily
# (7-day segments, dirty ratio 0.5). These bound it: the active segment rolls hourly, a record
# is compacted at most a day after it was superseded, tombstones stay visible for a day so
# restoring consumers still see deletions. Dropped (with a warning) by a broker that rejects
# them; noida-db 0.2.3 and Kafka accept them.
COMPACT_TUNING: dict[str, str] = {
    "segment.ms": str(3600 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
    "max.compaction.lag.ms": str(24 * 3600 * 1000),
    "delete.retention.ms": str(24 * 3600 * 1000),
}


class AdminError(RuntimeError):
    """A Kafka administrative operation failed; the message says which and why."""


class TopicMismatchError(AdminError):
    """Existing topics differ from the registry (partition count or cleanup policy)."""


class Record(NamedTuple):
    """One record read back by :func:`read_all`."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    timestamp: int  # ms since the epoch (CreateTime); -1 if the broker gave none


def _servers(bootstrap: str) -> str:
    return ",".join(s.strip().removeprefix("kafka://") for s in bootstrap.split(",") if s.strip())


def _client_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return client_config(  # with the TLS/SASL settings (stream/kafka_config.py)
        _servers(bootstrap),
        **{
            "log.connection.close": False,
            # librdkafka logs connection failures to stderr unless it has a logger.
            "logger": logging.getLogger("stream.local.admin.librdkafka"),
            **extra,
        },
    )


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient(_client_config(bootstrap))


def _throwaway_consumer(bootstrap: str, extra: Mapping[str, Any] | None = None) -> Consumer:
    return Consumer(
        _client_config(
            bootstrap,
            **{
                "group.id": f"purchase-stream-admin-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                **(extra or {}),
            },
        )
    )


def assigned_consumer(
    bootstrap: str,
    name: str,
    topics: Iterable[str],
    partitions: int,
    offset: int,
    fetch_wait_ms: int,
) -> Consumer:
    """A consumer that reads every partition of ``topics`` from ``offset`` by ``assign``,
    outside any consumer group (the worker's catalogue and live-update feeds: every worker
    reads all of it, and nothing is committed). ``group.id`` is required by librdkafka but
    never joined."""
    consumer = Consumer(
        _client_config(
            bootstrap,
            **{
                "group.id": f"purchase-stream-{name}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": fetch_wait_ms,
            },
        )
    )
    consumer.assign([TopicPartition(t, p, offset) for t in topics for p in range(partitions)])
    return consumer


class RestingReader:
    """Polls an :func:`assigned_consumer` and stops it fetching while there is nothing new.

    A Kafka broker holds an empty fetch for ``fetch.wait.max.ms``; the embedded noida-db
    answers at once, and librdkafka then re-fetches in a tight loop: ~0.43 of a core per idle
    feed consumer in a worker with no traffic, and the broker's CPU to answer it
    (BENCHMARKS.md). librdkafka has no backoff for empty fetches, and ``pause``/``resume``
    delayed records by up to 1.3 s and skipped one at a logical offset. So the reader keeps
    every partition's next offset itself (numeric from the start), and when a poll finds
    nothing it unassigns, rests ``rest_s`` and assigns again at those offsets: nothing is
    skipped, and the first record after a quiet spell waits at most ``rest_s`` longer.
    """

    def __init__(
        self, consumer: Consumer, positions: Mapping[tuple[str, int], int], rest_s: float = 0.1
    ) -> None:
        self.consumer = consumer
        self.positions = dict(positions)
        self.rest_s = rest_s
        consumer.assign(self._assignment())

    @classmethod
    def at(
        cls, consumer: Consumer, topics: Iterable[str], partitions: int, end: bool
    ) -> RestingReader:
        """From each partition's high (``end``) or low watermark as it is now."""
        positions = {}
        for t in topics:
            for p in range(partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=30)
                positions[(t, p)] = high if end else low
        return cls(consumer, positions)

    def _assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in self.positions.items()]

    def poll(self, stop: threading.Event) -> list[Message]:
        msgs = self.consumer.consume(500, timeout=0.01)
        for m in msgs:
            if m.error() is None:
                self.positions[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
        if not msgs and not stop.is_set():
            self.consumer.unassign()
            stop.wait(self.rest_s)
            self.consumer.assign(self._assignment())
        return msgs


def _topic_partitions(admin: AdminClient, timeout: float) -> dict[str, int]:
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise AdminError(f"cannot read cluster metadata within {timeout:.0f} s: {exc}") from exc
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def topic_config(spec: TopicSpec, replication_factor: int = 1) -> dict[str, str]:
    """The topic-level configs :func:`create_topics` sets for ``spec`` (tuning included)."""
    config = {"cleanup.policy": spec.cleanup_policy}
    if spec.retention_ms is not None:
        config["retention.ms"] = str(spec.retention_ms)
    if spec.segment_ms is not None:
        config["segment.ms"] = str(spec.segment_ms)
    if spec.compacted:
        config.update(COMPACT_TUNING)
    if replication_factor >= 3:
        config["min.insync.replicas"] = "2"
    return config


def local_topic_config(name: str, config: Mapping[str, str], retention_ms: int) -> dict[str, str]:
    """``config`` of topic ``name`` on the local embedded broker: bounded (local/topics.py)."""
    if name in LOCAL_KEEP_WHOLE:
        return dict(config)
    out = dict(config)
    if out.get("cleanup.policy") == "compact":
        out["cleanup.policy"] = "compact,delete"
    current = int(out.get("retention.ms", retention_ms))
    out["retention.ms"] = str(retention_ms if current < 0 else min(current, retention_ms))
    out["segment.ms"] = str(min(LOCAL_SEGMENT_MS, retention_ms))
    return out


def _essential(config: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in config.items() if k in ("cleanup.policy", "retention.ms")}


def _create(
    admin: AdminClient, new: list[NewTopic], timeout: float
) -> dict[str, KafkaError | None]:
    """Create topics; map each name to None (created/exists) or its error."""
    if not new:
        return {}
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    out: dict[str, KafkaError | None] = {}
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout + 5)
            out[name] = None
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not isinstance(err, KafkaError):
                raise AdminError(f"creating topic {name!r} failed: {exc}") from exc
            # Lost a race with another creator (second worker, second `topics` run): fine.
            out[name] = None if err.code() == KafkaError.TOPIC_ALREADY_EXISTS else err
        except TimeoutError as exc:
            raise AdminError(f"creating topic {name!r} timed out after {timeout:.0f} s") from exc
    return out


def _cleanup_policies(admin: AdminClient, names: Iterable[str], timeout: float) -> dict[str, str]:
    """cleanup.policy of each topic; topics the broker cannot describe are left out."""
    resources = [ConfigResource(ResourceType.TOPIC, n) for n in names]
    if not resources:
        return {}
    out: dict[str, str] = {}
    try:
        futures = admin.describe_configs(resources, request_timeout=timeout)
    except KafkaException as exc:  # pragma: no cover - broker without DescribeConfigs
        log.warning("cannot describe topic configs: %s", exc)
        return out
    for res, fut in futures.items():
        try:
            entries = fut.result(timeout=timeout + 5)
        except (KafkaException, TimeoutError) as exc:
            log.warning("cannot describe config of topic %s: %s", res.name, exc)
            continue
        entry = entries.get("cleanup.policy")
        if entry is not None and entry.value is not None:
            out[res.name] = str(entry.value)
    return out


def create_topics(
    bootstrap: str,
    partitions: int,
    replication_factor: int,
    names: Iterable[str] | None = None,
    timeout: float = 30,
    local_retention_ms: int | None = None,
) -> dict[str, str]:
    """Create the registry's topics (all, or ``names``); idempotent.

    ``local_retention_ms``: the embedded broker's bounded profile (:func:`local_topic_config`);
    None = the registry's own settings (production, tests).

    Returns ``{topic: "created" | "exists"}``. Raises :class:`TopicMismatchError` if an
    existing topic has another partition count (co-partitioned joins would silently read the
    wrong keys) or cleanup policy, :class:`AdminError` on any other failure. Waits until every
    topic is visible in the cluster metadata.
    """
    if partitions < 1 or replication_factor < 1:
        raise ValueError("partitions and replication_factor must be >= 1")
    if names is None:
        specs = list(TOPICS.values())
    else:
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in TOPICS]
        if unknown:
            raise AdminError(f"unknown topic(s) {unknown}; the registry has {sorted(TOPICS)}")
        specs = [TOPICS[n] for n in wanted]
    deadline = time.monotonic() + timeout
    admin = _admin(bootstrap)
    existing = _topic_partitions(admin, timeout)

    configs = {s.name: topic_config(s, replication_factor) for s in specs}
    if local_retention_ms is not None:
        configs = {n: local_topic_config(n, c, local_retention_ms) for n, c in configs.items()}
    to_create = [s.name for s in specs if s.name not in existing]
    result = {s.name: "exists" for s in specs if s.name in existing}

    def new_topics(names: list[str], essential_only: bool) -> list[NewTopic]:
        return [
            NewTopic(
                n,
                num_partitions=partitions,
                replication_factor=replication_factor,
                config=_essential(configs[n]) if essential_only else configs[n],
            )
            for n in names
        ]

    errors = _create(admin, new_topics(to_create, False), _left(deadline))
    retry = [
        n for n, e in errors.items() if e is not None and e.code() == KafkaError.INVALID_CONFIG
    ]
    if retry:
        log.warning(
            "broker rejected tuning configs for %s (%s); creating them with only "
            "cleanup.policy/retention.ms",
            retry,
            "; ".join(str(errors[n]) for n in retry),
        )
        errors.update(_create(admin, new_topics(retry, True), _left(deadline)))
    failed = {n: e for n, e in errors.items() if e is not None}
    if failed:
        detail = "; ".join(f"{n}: {e.str()}" for n, e in sorted(failed.items()))
        raise AdminError(f"could not create topics on {bootstrap}: {detail}")
    for n in to_create:
        result[n] = "created"

    actual = _wait_for_metadata(admin, [s.name for s in specs], deadline)
    problems = [
        f"{n} has {actual[n]} partitions, the registry wants {partitions}"
        for n in sorted(actual)
        if actual[n] != partitions
    ]
    policies = _cleanup_policies(admin, [s.name for s in specs], _left(deadline))
    problems += [
        f"{s.name} has cleanup.policy={policies[s.name]}, the registry wants {s.cleanup_policy}"
        for s in specs
        if s.name in policies
        and set(policies[s.name].split(","))
        not in ({s.cleanup_policy}, set(configs[s.name]["cleanup.policy"].split(",")))
    ]
    if problems:
        raise TopicMismatchError(
            f"existing topics on {bootstrap} differ from stream/local/topics.py: "
            + "; ".join(problems)
            + ". Co-partitioned joins and compaction depend on these; fix the topics "
            "(recreate them, or change settings.partitions to match) before starting workers."
        )
    log.info(
        "topics on %s: %s",
        bootstrap,
        ", ".join(f"{n} {state}" for n, state in sorted(result.items())),
    )
    return result


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 1.0)


def _wait_for_metadata(admin: AdminClient, names: list[str], deadline: float) -> dict[str, int]:
    """Poll metadata until all ``names`` exist; a newly created topic may lag behind."""
    while True:
        current = _topic_partitions(admin, _left(deadline))
        missing = [n for n in names if n not in current]
        if not missing:
            return {n: current[n] for n in names}
        if time.monotonic() >= deadline:
            raise AdminError(f"topics {missing} did not appear in the metadata in time")
        time.sleep(0.1)


def describe(bootstrap: str, timeout: float = 10, include_internal: bool = False) -> dict[str, int]:
    """``{topic: partition count}`` of the cluster (``__*`` topics only if asked)."""
    found = _topic_partitions(_admin(bootstrap), timeout)
    return {n: p for n, p in sorted(found.items()) if include_internal or not n.startswith("__")}


def max_message_bytes(bootstrap: str, topics: Iterable[str], timeout: float = 10) -> dict[str, int]:
    """``max.message.bytes`` of each of ``topics`` the broker names (DescribeConfigs).

    Empty when the broker does not answer: the caller keeps its configured limit.
    """
    admin = _admin(bootstrap)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics]
    found: dict[str, int] = {}
    try:
        for res, future in admin.describe_configs(resources, request_timeout=timeout).items():
            entry = future.result(timeout).get("max.message.bytes")
            if entry is not None and entry.value is not None:
                found[res.name] = int(entry.value)
    except (KafkaException, ValueError, TimeoutError) as exc:
        log.warning("max.message.bytes not read from the broker (%s)", exc)
        return {}
    return found


def _partitions_of(bootstrap: str, topic: str, timeout: float) -> int:
    count = _topic_partitions(_admin(bootstrap), timeout).get(topic)
    if count is None:
        raise AdminError(f"topic {topic!r} does not exist on {bootstrap}")
    return count


def watermarks(bootstrap: str, topic: str, timeout: float = 10) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` watermark offsets of ``topic``."""
    count = _partitions_of(bootstrap, topic, timeout)
    consumer = _throwaway_consumer(bootstrap)
    try:
        out: dict[int, tuple[int, int]] = {}
        for p in range(count):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout, cached=False
            )
            out[p] = (int(low), int(high))
        return out
    except KafkaException as exc:
        raise AdminError(f"cannot read offsets of {topic!r}: {exc}") from exc
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, timeout: float = 10) -> dict[int, int]:
    """``{partition: high watermark}`` (offset of the next record to be written)."""
    return {p: high for p, (_, high) in watermarks(bootstrap, topic, timeout).items()}


def committed_offsets(
    bootstrap: str, group: str, topic: str, timeout: float = 10
) -> dict[int, int | None]:
    """``{partition: committed offset}`` of consumer ``group`` on ``topic``; None = none yet."""
    count = _partitions_of(bootstrap, topic, timeout)
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(count)])
    # Keep a reference to the client until the future resolves: a collected AdminClient
    # destroys its handle and the future then fails or never completes.
    admin = _admin(bootstrap)
    futures = admin.list_consumer_group_offsets([request], request_timeout=timeout)
    try:
        answer = futures[group].result(timeout=timeout + 5)
    except (KafkaException, TimeoutError) as exc:
        raise AdminError(f"cannot read committed offsets of group {group!r}: {exc}") from exc
    out: dict[int, int | None] = dict.fromkeys(range(count))
    for tp in answer.topic_partitions or []:
        if tp.topic == topic:
            out[tp.partition] = tp.offset if tp.offset >= 0 else None
    return out


def lag(bootstrap: str, group: str, topic: str, timeout: float = 10) -> dict[int, int]:
    """``{partition: records not yet committed by group}`` (from the low watermark if none)."""
    marks = watermarks(bootstrap, topic, timeout)
    committed = committed_offsets(bootstrap, group, topic, timeout)
    out: dict[int, int] = {}
    for p, (low, high) in marks.items():
        position = committed.get(p)
        out[p] = max(high - max(position if position is not None else low, low), 0)
    return out


def group_lag(
    bootstrap: str, group: str, topics: Iterable[str] | None = None, timeout: float = 10
) -> int:
    """Records ``group`` has not yet committed, summed over ``topics``.

    The default is what the worker's consumer group reads (``GROUP_INPUTS``: every stage
    input but the catalogue, which each worker reads whole outside the group and never
    commits).
    """
    from topologies.pipeline import GROUP_INPUTS

    return sum(
        sum(lag(bootstrap, group, t, timeout).values())
        for t in (GROUP_INPUTS if topics is None else topics)
    )


def read_range(
    bootstrap: str, topic: str, partition: int, first: int, last: int, timeout: float = 10
) -> list[Record]:
    """Records ``first``..``last`` (inclusive) of one partition, read directly (no group).

    Fewer are returned if some no longer exist (retention) or the end of the partition is
    reached. Raises ``TimeoutError`` after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    consumer = _throwaway_consumer(bootstrap, {"enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, partition, first)])
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"read_range({topic}[{partition}] {first}..{last}) timed out")
            msg = consumer.poll(min(left, 0.5))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == PARTITION_EOF:
                    return records
                raise AdminError(f"read_range({topic}[{partition}]) failed: {err.str()}")
            offset = int(msg.offset() or 0)
            if offset > last:
                return records
            ts_type, ts = msg.timestamp()
            records.append(
                Record(msg.key(), msg.value(), partition, offset, int(ts) if ts_type else -1)
            )
            if offset == last:
                return records
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, timeout: float = 10) -> list[Record]:
    """Every committed record of ``topic`` from the earliest offset to the current ends.

    Assigns all partitions (no group join, nothing committed) and reads until each
    partition's position reaches the high watermark taken at the start. Sorted by
    (partition, offset). Raises ``TimeoutError`` if that takes longer than ``timeout`` s
    (e.g. an open transaction holds the read_committed position back).
    """
    deadline = time.monotonic() + timeout
    ends = {
        p: high for p, (low, high) in watermarks(bootstrap, topic, timeout).items() if high > low
    }
    records: list[Record] = []
    if not ends:
        return records
    consumer = _throwaway_consumer(bootstrap, {"enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        pending = set(ends)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"read_all({topic!r}): partitions {sorted(pending)} did not reach their end "
                    f"offsets {[ends[p] for p in sorted(pending)]} within {timeout} s"
                )
            msg = consumer.poll(min(left, 0.5))
            if msg is not None:
                err = msg.error()
                if err is None:
                    ts_type, ts = msg.timestamp()
                    records.append(
                        Record(
                            msg.key(),
                            msg.value(),
                            int(msg.partition() or 0),
                            int(msg.offset() or 0),
                            int(ts) if ts_type else -1,
                        )
                    )
                elif err.code() != PARTITION_EOF:
                    raise AdminError(f"read_all({topic!r}) failed: {err.str()}")
            positions = consumer.position([TopicPartition(topic, p) for p in pending])
            for tp in positions:
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
    finally:
        consumer.close()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


class PartitionOffsets(NamedTuple):
    """Where a consumer group stands on one topic partition (offsets only, no data)."""

    committed: int | None  # None = the group has committed nothing here
    low: int
    high: int

    @property
    def lag(self) -> int:
        """Records the group has not committed (from the log start when it has committed none)."""
        position = self.low if self.committed is None else max(self.committed, self.low)
        return max(self.high - position, 0)


class GroupOffsets:
    """A consumer group's committed offsets and the watermarks of the partitions it reads.

    One long-lived AdminClient for a periodic reader (the worker's liveness check): two
    requests per call whatever the number of partitions (OffsetFetch for the group, one
    ListOffsets for the earliest and one for the latest offsets). It asks the broker, not the
    worker's consumer, so it answers while the worker holds no partition or its group is
    rebalancing -- exactly when the consumer has nothing to say. Blocking: call it from a
    thread in async code.
    """

    def __init__(self, bootstrap: str, group: str, topics: Iterable[str], partitions: int) -> None:
        self.group = group
        self.tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        self._admin = _admin(bootstrap)

    def read(self, timeout: float = 5.0) -> dict[tuple[str, int], PartitionOffsets]:
        from confluent_kafka import IsolationLevel
        from confluent_kafka.admin import OffsetSpec

        request = ConsumerGroupTopicPartitions(self.group, list(self.tps))
        try:
            committed_f = self._admin.list_consumer_group_offsets(
                [request], request_timeout=timeout
            )[self.group]
            ends = {
                spec: self._admin.list_offsets(
                    {tp: getattr(OffsetSpec, spec)() for tp in self.tps},
                    isolation_level=IsolationLevel.READ_UNCOMMITTED,
                    request_timeout=timeout,
                )
                for spec in ("earliest", "latest")
            }
            answer = committed_f.result(timeout=timeout + 5)
            low = {
                (tp.topic, tp.partition): f.result(timeout=timeout + 5).offset
                for tp, f in ends["earliest"].items()
            }
            high = {
                (tp.topic, tp.partition): f.result(timeout=timeout + 5).offset
                for tp, f in ends["latest"].items()
            }
        except (KafkaException, TimeoutError) as exc:
            raise AdminError(f"cannot read the offsets of group {self.group!r}: {exc}") from exc
        committed: dict[tuple[str, int], int | None] = {
            (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
            for tp in answer.topic_partitions or []
        }
        return {
            key: PartitionOffsets(committed.get(key), int(low[key]), int(high[key]))
            for key in low
            if key in high
        }


def create_local_changelogs(
    bootstrap: str, app_id: str, table_names: Iterable[str], partitions: int, retention_ms: int
) -> None:
    """Create the worker's table changelogs on the local broker with the bounded profile.

    Faust would create them (compacted, unbounded) when the worker starts; created first,
    they keep :func:`local_topic_config`'s settings (Faust leaves existing topics alone).
    Names as Faust gives them: ``<app_id>-<table>-changelog``.
    """
    base = {"cleanup.policy": "compact", **COMPACT_TUNING}
    new = [
        NewTopic(
            f"{app_id}-{table}-changelog",
            num_partitions=partitions,
            replication_factor=1,
            config=local_topic_config("changelog", base, retention_ms),
        )
        for table in table_names
    ]
    failed = {n: e for n, e in _create(_admin(bootstrap), new, 30).items() if e is not None}
    if failed:
        detail = "; ".join(f"{n}: {e.str()}" for n, e in sorted(failed.items()))
        raise AdminError(f"could not create changelog topics on {bootstrap}: {detail}")


def create_local_topics(bootstrap: str, settings: Any) -> dict[str, str]:
    """Every topic on the local embedded broker: the registry's and the worker's changelogs,
    bounded by ``settings.local_retention_s`` (0 = the registry's production settings)."""
    from stream.engine.app import table_name
    from topologies.pipeline import STAGES

    retention_ms = int(settings.local_retention_s * 1000) or None
    created = create_topics(bootstrap, settings.partitions, 1, local_retention_ms=retention_ms)
    if retention_ms is not None:
        tables = [table_name(s) for s in STAGES if not s.is_global]
        create_local_changelogs(
            bootstrap, settings.app_id, tables, settings.partitions, retention_ms
        )
    return created
