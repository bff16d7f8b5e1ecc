"""Kafka administration from the topic registry: create/check topics, offsets, lag, read-back.

Used by ``purchase-stream topics`` (docker-compose's one-shot ``topics`` service and the local
demo), the demo's lag summary, the worker and the integration tests. Everything here speaks the
plain Kafka protocol through confluent-kafka, so it works the same on real Kafka and on the
embedded broker (:mod:`stream.local.broker`). By concern:

- :mod:`stream.local.clients`: the clients (admin, throwaway and assigned consumers, the
  resting feed reader), all built from :mod:`stream.kafka_config`;
- :mod:`stream.local.topic_admin`: creating and checking topics (and the local profile);
- :mod:`stream.local.offsets`: watermarks, committed offsets, lag and reading records back;
- :mod:`stream.local.provision`: every topic of a local run, the worker's changelogs included.

This module re-exports their names, the ones the rest of the code imports.
"""

from __future__ import annotations

from stream.local.clients import (
    AdminError,
    RestingReader,
    TopicMismatchError,
    _admin,
    _client_config,
    _throwaway_consumer,
    assigned_consumer,
)
from stream.local.offsets import (
    GroupOffsets,
    PartitionOffsets,
    Record,
    committed_offsets,
    end_offsets,
    group_lag,
    lag,
    read_all,
    read_range,
    watermarks,
)
from stream.local.topic_admin import (
    COMPACT_TUNING,
    create_local_changelogs,
    create_topics,
    describe,
    local_topic_config,
    max_message_bytes,
    topic_config,
)

__all__ = [
    "COMPACT_TUNING",
    "AdminError",
    "GroupOffsets",
    "PartitionOffsets",
    "Record",
    "RestingReader",
    "TopicMismatchError",
    "_admin",
    "_client_config",
    "_throwaway_consumer",
    "assigned_consumer",
    "committed_offsets",
    "create_local_changelogs",
    "create_topics",
    "describe",
    "end_offsets",
    "group_lag",
    "lag",
    "local_topic_config",
    "max_message_bytes",
    "read_all",
    "read_range",
    "topic_config",
    "watermarks",
]
