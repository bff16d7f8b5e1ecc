"""Which partition a key goes to: the Kafka default partitioner, as the worker's clients use it.

A module of its own so that readers (the API's forwarding, benchmarks) need not import the
worker to route a key.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def key_partition(key: str, partitions: int) -> int:
    """The partition the Kafka default (murmur2) partitioner gives a key, as aiokafka does."""
    return key_bytes_partition(key.encode(), partitions)


def key_bytes_partition(key: bytes, partitions: int) -> int:
    """:func:`key_partition` of a key's bytes (librdkafka's ``murmur2_random`` for a key)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions
