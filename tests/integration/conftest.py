"""Integration-test fixtures: a real Kafka-protocol broker (embedded noida-db) per session.

Every test under tests/integration is marked ``integration`` (``pytest -m integration`` /
``-m "not integration"``). If the broker cannot start, the tests are skipped with the reason
-- unless ``CI=1`` or ``PURCHASE_STREAM_REQUIRE_BROKER=1`` is set (``make test``, ``.ci/run``),
in which case they fail: CI must never go green by skipping the integration suite.

Fixtures:
- ``broker``: one session-wide broker with every registry topic created (4 partitions).
  Tests share it, so they must use unique keys/values (or their own consumer groups) and
  not assume a topic is empty.
- ``broker_factory``: ``broker_factory(name, topics=True)`` starts an extra, empty broker
  (same skip/fail policy, stopped at session end) for tests that need topics nobody else
  writes to or that stop/restart the broker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream.local.broker import BrokerError, EmbeddedBroker
from stream.local.topic_admin import create_topics

PARTITIONS = 4
REPLICATION_FACTOR = 1
_HERE = Path(__file__).resolve().parent
_TRUE = {"1", "true", "yes", "on"}


def broker_required() -> bool:
    """True when a broker that cannot start must fail the run instead of skipping."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("CI", "PURCHASE_STREAM_REQUIRE_BROKER")
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest hook sees the whole session's items: mark only the ones under this folder.
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _start(data_dir: Path, with_topics: bool) -> EmbeddedBroker:
    broker = EmbeddedBroker(data_dir)
    try:
        broker.start()
        if with_topics:
            create_topics(broker.bootstrap, PARTITIONS, REPLICATION_FACTOR)
    except (BrokerError, OSError) as exc:
        broker.stop()
        reason = f"the embedded Kafka broker (noida-db) could not start: {exc}"
        if broker_required():
            pytest.fail(
                reason + "\n(CI=1 / PURCHASE_STREAM_REQUIRE_BROKER=1: integration tests must run)",
                pytrace=False,
            )
        pytest.skip(reason + " -- set PURCHASE_STREAM_REQUIRE_BROKER=1 to make this a failure")
    return broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """The session's broker, every registry topic created with 4 partitions."""
    b = _start(tmp_path_factory.mktemp("noida"), with_topics=True)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def bootstrap(broker: EmbeddedBroker) -> str:
    return broker.bootstrap


@pytest.fixture(scope="session")
def broker_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., EmbeddedBroker]]:
    """Start extra brokers: ``broker_factory("name", topics=False)``; all stopped at the end."""
    started: list[EmbeddedBroker] = []

    def factory(name: str = "extra", topics: bool = False) -> EmbeddedBroker:
        b = _start(tmp_path_factory.mktemp(f"noida-{name}"), with_topics=topics)
        started.append(b)
        return b

    try:
        yield factory
    finally:
        for b in reversed(started):
            b.stop()
