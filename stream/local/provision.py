"""Provisioning the local embedded broker: every topic the pipeline needs, bounded.

The registry's topics (stream/local/topics.py) and the worker's table changelogs, which Faust
names after the worker's tables (:func:`stream.engine.app.table_name`), so this module
depends on the engine; the engine does not depend on it (no import cycle through
:mod:`stream.local.topic_admin`).
"""

from __future__ import annotations

from typing import Any

from stream.engine.app import table_name
from stream.local.topic_admin import create_local_changelogs, create_topics
from topologies.pipeline import STAGES


def create_local_topics(bootstrap: str, settings: Any) -> dict[str, str]:
    """Every topic on the local embedded broker: the registry's and the worker's changelogs,
    bounded by ``settings.local_retention_s`` (0 = the registry's production settings)."""
    retention_ms = int(settings.local_retention_s * 1000) or None
    created = create_topics(bootstrap, settings.partitions, 1, local_retention_ms=retention_ms)
    if retention_ms is not None:
        tables = [table_name(s) for s in STAGES if not s.is_global]
        create_local_changelogs(
            bootstrap, settings.app_id, tables, settings.partitions, retention_ms
        )
    return created
