"""The chaos suite: faults under live traffic, then every output compared with ``replay``.

Two workers share the partitions of the embedded broker while the POS simulator sends at a
steady rate; a schedule of faults (``kill -9``, SIGTERM, a broker restart, poison records, an
empty state directory) runs against them; then the input topics are dumped and replayed, and
every output topic is compared (tests/integration/chaos_harness.py has the method). The short
schedule runs under ``make test``; ``make chaos`` (``PURCHASE_STREAM_CHAOS=full``) runs the
long one. Use ``-s`` to see the progress and the fault table as it goes; the table is also in
the assertion message.

The assertion is the product's promise: the pipeline processes again within 60 s of every
fault, and nothing is lost, counted twice or stored beyond its owner's consent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stream.local.broker import BrokerError
from tests.conftest import CHAOS_FULL
from tests.integration.chaos_harness import FULL, RECOVERY_LIMIT_S, SHORT, ChaosRun
from tests.integration.conftest import broker_required

pytestmark = pytest.mark.chaos


def test_faults_under_traffic_lose_nothing_and_recover(tmp_path: Path) -> None:
    scale = FULL if CHAOS_FULL else SHORT
    # CHAOS_SEED replays a reported run's traffic and fault targets (the seed is in the
    # table's first line; timing under load still differs). Not PURCHASE_STREAM_*: the
    # workers inherit the environment and reject settings they do not know.
    seed = os.environ.get("CHAOS_SEED")
    run = ChaosRun(scale, tmp_path, seed=int(seed) if seed else None)
    try:
        try:
            run.start_infra()
        except (BrokerError, OSError) as exc:
            reason = f"the embedded Kafka broker (noida-db) could not start: {exc}"
            if broker_required():
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
        report = run.run()
    finally:
        run.stop_all()
    table = report.table()
    print("\n" + table)
    out = Path("build")
    if out.is_dir():  # make test / make chaos keep the latest figures with the junit file
        (out / f"chaos-{scale.name}.json").write_text(json.dumps(report.as_dict(), indent=2))

    assert report.traffic_errors == [], table
    assert [f.kind for f in report.faults] == list(scale.faults), table
    slow = [f for f in report.faults if not f.ok]
    assert not slow, f"not processing again within {RECOVERY_LIMIT_S:.0f} s:\n{table}"
    assert report.lost == 0, table
    assert report.double == 0, table
    assert report.beyond_consent == [], table
    assert report.inputs_lost_by_broker == [], table
    assert report.stale_state == [], table
    assert report.differ == 0, table
    assert report.receipts_sent > 0 and report.events_sent > report.receipts_sent, table
