"""The local broker's bounded topic profile (stream/local/topics.py, stream/local/topic_admin.py
local_topic_config); production configs untouched."""

from __future__ import annotations

from stream.local.topic_admin import local_topic_config, topic_config
from stream.local.topics import LOCAL_KEEP_WHOLE, TOPICS

TEN_MIN = 600_000


def test_every_topic_but_the_registers_and_the_permanent_ones_is_bounded_locally() -> None:
    for name, spec in TOPICS.items():
        prod = topic_config(spec)
        local = local_topic_config(name, prod, TEN_MIN)
        if name in LOCAL_KEEP_WHOLE:
            assert local == prod, name
            continue
        assert int(local["retention.ms"]) <= TEN_MIN, name
        assert local["segment.ms"] == "60000", name  # noida-db deletes closed segments only
        expected = "compact,delete" if spec.compacted else "delete"
        assert local["cleanup.policy"] == expected, name


def test_kept_whole_are_the_registers_read_from_the_start_and_the_permanent_topics() -> None:
    assert {"customer.cards", "customer.consents", "product.catalog"} <= LOCAL_KEEP_WHOLE
    for name in LOCAL_KEEP_WHOLE:
        spec = TOPICS[name]
        assert spec.compacted or spec.retention_ms == -1, name


def test_a_shorter_registry_retention_stays_and_segments_never_exceed_retention() -> None:
    spec = TOPICS["smobiili.counters"]  # 1 day in the registry
    assert local_topic_config(spec.name, topic_config(spec), TEN_MIN)["retention.ms"] == "600000"
    short = local_topic_config("x", {"cleanup.policy": "delete", "retention.ms": "5000"}, TEN_MIN)
    assert short["retention.ms"] == "5000"
    tiny = local_topic_config("x", {"cleanup.policy": "delete"}, 5000)
    assert (tiny["retention.ms"], tiny["segment.ms"]) == ("5000", "5000")


def test_production_configs_have_no_local_settings() -> None:
    for spec in TOPICS.values():
        config = topic_config(spec, replication_factor=3)
        assert "delete" not in config["cleanup.policy"] or not spec.compacted
        assert config.get("segment.ms") != "60000"
        if spec.name == "pos.receipts":
            assert "retention.ms" not in config  # the broker's default (7 days)


def test_the_register_propagation_topics_are_never_deleted_by_time() -> None:
    # Found while writing the README tour: register.people / register.households records
    # carry the broker time of the card record they come from. A register sent an hour
    # back (the simulator) -- or a backfill of cards older than the topic's retention in
    # production -- was deleted by time retention before the worker read it, and members
    # had no household in the API. Like Kafka Streams' repartition topics, these keep
    # their records; locally too.
    for name in ("register.people", "register.households"):
        spec = TOPICS[name]
        assert spec.retention_ms == -1, name
        assert name in LOCAL_KEEP_WHOLE, name
        local = local_topic_config(name, topic_config(spec), TEN_MIN)
        assert local["retention.ms"] == "-1", name
