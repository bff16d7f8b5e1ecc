"""Offsets, lag and read-back: watermarks, a group's committed offsets and lag (one-off, and
:class:`GroupOffsets` for a periodic reader), and reading records back without a group."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import NamedTuple

from confluent_kafka import (
    OFFSET_BEGINNING,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)

from stream.engine.patches import PARTITION_EOF
from stream.local.clients import AdminError, admin_client, throwaway_consumer, topic_partitions


class Record(NamedTuple):
    """One record read back by :func:`read_all`."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    timestamp: int  # ms since the epoch (CreateTime); -1 if the broker gave none


def _partitions_of(bootstrap: str, topic: str, timeout: float) -> int:
    count = topic_partitions(admin_client(bootstrap), timeout).get(topic)
    if count is None:
        raise AdminError(f"topic {topic!r} does not exist on {bootstrap}")
    return count


def watermarks(bootstrap: str, topic: str, timeout: float = 10) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` watermark offsets of ``topic``."""
    count = _partitions_of(bootstrap, topic, timeout)
    consumer = throwaway_consumer(bootstrap)
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
    admin = admin_client(bootstrap)
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
    consumer = throwaway_consumer(bootstrap, {"enable.partition.eof": True})
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
    consumer = throwaway_consumer(bootstrap, {"enable.partition.eof": True})
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
        self._admin = admin_client(bootstrap)

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
