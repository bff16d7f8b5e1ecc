"""Which partition a key goes to: the Kafka default partitioner, as the worker's clients use it.

A module of its own so that readers (the API's forwarding, benchmarks) need not import the
worker to route a key.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def key_partition(key: str, partitions: int) -> int:
    """The partition the Kafka default (murmur2) partitioner gives a key, as aiokafka does."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions
