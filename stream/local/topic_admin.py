"""Creating and checking topics from the topic registry (stream/local/topics.py).

Topics are never left to broker auto-creation: an auto-created topic gets the broker's default
partition count (noida-db: 1) and policy, which silently breaks co-partitioned joins and the
compaction of personal data. :func:`create_topics` therefore creates every registry topic
explicitly and refuses to accept an existing topic whose partition count or cleanup policy
differs from the registry. On the local embedded broker topics get a bounded profile
(:func:`local_topic_config`), the worker's changelogs included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

from confluent_kafka import (
    KafkaError,
    KafkaException,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from stream.local.clients import AdminError, TopicMismatchError, admin_client, topic_partitions
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
    admin = admin_client(bootstrap)
    existing = topic_partitions(admin, timeout)

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
        current = topic_partitions(admin, _left(deadline))
        missing = [n for n in names if n not in current]
        if not missing:
            return {n: current[n] for n in names}
        if time.monotonic() >= deadline:
            raise AdminError(f"topics {missing} did not appear in the metadata in time")
        time.sleep(0.1)


def describe(bootstrap: str, timeout: float = 10, include_internal: bool = False) -> dict[str, int]:
    """``{topic: partition count}`` of the cluster (``__*`` topics only if asked)."""
    found = topic_partitions(admin_client(bootstrap), timeout)
    return {n: p for n, p in sorted(found.items()) if include_internal or not n.startswith("__")}


def max_message_bytes(bootstrap: str, topics: Iterable[str], timeout: float = 10) -> dict[str, int]:
    """``max.message.bytes`` of each of ``topics`` the broker names (DescribeConfigs).

    Empty when the broker does not answer: the caller keeps its configured limit.
    """
    admin = admin_client(bootstrap)
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
    failed = {n: e for n, e in _create(admin_client(bootstrap), new, 30).items() if e is not None}
    if failed:
        detail = "; ".join(f"{n}: {e.str()}" for n, e in sorted(failed.items()))
        raise AdminError(f"could not create changelog topics on {bootstrap}: {detail}")
