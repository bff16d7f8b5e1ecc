"""Records Faust never handed to a stage: find the forward jumps in each input partition.

The commit rule needs every record of an input partition processed before its offset is
committed. A forward jump in the offsets a stage sees means records Faust never delivered:
seen on a fresh worker right after recovery ("Seek stream partitions to committed offsets"),
a known class of Faust races between recovery, flow control and the fetcher
(faust-streaming issues #216, #596), and once in the chaos suite at a handover (a receipt
at the committed offset never processed, its successor started at). The agent
(stream/engine/agents.py) reads the missing records from the broker and processes them
first. Offsets carry no personal data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from stream.local.clients import AdminError
from stream.local.offsets import committed_offsets
from stream.local.topics import TOPICS

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class OffsetTracker:
    """The last offset each stage processed per input partition, and where each must start.

    One per worker app, shared by its agents: each input topic is read by one stage
    (topologies/pipeline.py), so a partition's offsets are one stage's.
    """

    def __init__(self) -> None:
        self.last: dict[Partition, int] = {}
        # The group's committed offset of each partition at its assignment (where it starts).
        self.start: dict[Partition, int] = {}

    def gap(self, stage: str, topic: str, partition: int, offset: int) -> tuple[int, int] | None:
        """Log where each input partition starts; return a forward jump in its offsets.

        On a compacted topic a jump is normal (compaction removed records). Elsewhere the
        returned range (inclusive) was never handed to this stage.
        """
        last = self.last.get((topic, partition))
        if last is None:
            log.info("stage %s starts %s[%d] at offset %d", stage, topic, partition, offset)
            start = self.start.get((topic, partition))
            if start is not None and offset > start and not TOPICS[topic].compacted:
                # The first record after an assignment is past where the group had
                # committed: Faust skipped the partition's first records.
                log.warning(
                    "stage %s: %s[%d] starts at %d, the group had committed %d; reading "
                    "%d..%d from the broker",
                    stage,
                    topic,
                    partition,
                    offset,
                    start,
                    start,
                    offset - 1,
                )
                return start, offset - 1
        elif offset > last + 1 and not TOPICS[topic].compacted:
            log.warning(
                "stage %s: offsets %d..%d of %s[%d] were never delivered to this worker; "
                "reading them from the broker",
                stage,
                last + 1,
                offset - 1,
                topic,
                partition,
            )
            return last + 1, offset - 1
        return None

    def done(self, topic: str, partition: int, offset: int) -> None:
        """``offset`` is processed (call only once its outputs are buffered)."""
        key = (topic, partition)
        self.start.pop(key, None)  # the start is checked once, when its first record is done
        last = self.last.get(key)
        if last is None or offset > last:
            self.last[key] = offset

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Partitions revoked: another worker may process them meanwhile, so a jump after
        they come back is not a gap."""
        for key in partitions:
            self.last.pop(key, None)
            self.start.pop(key, None)

    async def read_starts(self, bootstrap: str, group: str, tps: set[Partition]) -> None:
        """Where each assigned partition must start: the group's committed offsets."""
        for topic in sorted({t for t, _ in tps}):
            try:
                committed = await asyncio.to_thread(committed_offsets, bootstrap, group, topic)
            except (AdminError, OSError) as exc:
                log.warning("committed offsets of %s not read (%s)", topic, type(exc).__name__)
                continue
            for partition, offset in committed.items():
                if (topic, partition) in tps and offset is not None:
                    self.start.setdefault((topic, partition), offset)
