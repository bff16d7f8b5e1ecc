"""The "My purchases" page in a real headless browser (Debian chromium), updating live.

A receipt is produced to the broker; the page served by the worker must show the counter
change within two seconds, through the worker's server-sent events. The same run checks
what another household member's live stream carries (the joint Bonus figure, nothing
finer), that the stream refuses bad tokens, and that opening it is audited.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from confluent_kafka import Producer

from stream.kafka_config import producer_config
from stream.local.broker import EmbeddedBroker
from stream.local.offsets import read_all
from stream.local.registry_server import EmbeddedRegistryServer
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.tools.replay import encode_event
from tests.integration import api_scenario as sc
from tests.integration.test_api import start_workers
from tests.integration.worker_harness import produce_events

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "Debian chromium and chromium-driver are needed (make test installs them: "
            "apt-get install chromium chromium-driver)"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=480,720"):
        opts.add_argument(arg)
    opts.add_argument("--disable-dev-shm-usage")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def sse_events(port: int, token: str, into: list[tuple[str, Any]], stop: threading.Event) -> None:
    with requests.get(
        f"http://127.0.0.1:{port}/v1/me/live",
        params={"access_token": token},
        stream=True,
        timeout=(5, 30),
    ) as resp:
        assert resp.status_code == 200
        kind = None
        for raw in resp.iter_lines(decode_unicode=True):
            if stop.is_set():
                return
            if raw.startswith("event: "):
                kind = raw[7:]
            elif raw.startswith("data: ") and kind:
                into.append((kind, json.loads(raw[6:])))


@pytest.fixture
def worker_env(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path
) -> Iterator[tuple[EmbeddedBroker, Codec, Any]]:
    broker = broker_factory("live", topics=True)
    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "schemas.json").start()
    codec = Codec(ConfluentRegistryClient(registry.url))
    now = int(time.time() * 1000)
    produce_events(broker.bootstrap, codec, sc.world(now - 60_000))
    (worker,) = start_workers(broker.bootstrap, registry.url, tmp_path, 1)
    try:
        sc.wait_http(worker.web_port)
        worker.wait_idle()
        yield broker, codec, worker
    finally:
        worker.stop()
        registry.stop()


def test_the_page_shows_a_counter_change_within_two_seconds(
    worker_env: tuple[EmbeddedBroker, Codec, Any],
) -> None:
    broker, codec, worker = worker_env
    port = worker.web_port
    # The stream refuses what the API refuses.
    assert requests.get(f"http://127.0.0.1:{port}/v1/me/live", timeout=10).status_code == 401
    staff = requests.get(
        f"http://127.0.0.1:{port}/v1/me/live",
        params={"access_token": sc.staff_token()},
        timeout=10,
    )
    assert staff.status_code == 403

    # Bert (same household, member) listens too: he may see the joint Bonus only.
    bert_events: list[tuple[str, Any]] = []
    stop = threading.Event()
    listener = threading.Thread(
        target=sse_events,
        args=(port, sc.token("BERT"), bert_events, stop),
        daemon=True,
    )
    listener.start()

    driver = browser()
    try:
        token = sc.token("ANNA")
        driver.get(f"http://127.0.0.1:{port}/app/#token={token}")
        deadline = time.monotonic() + 30
        while driver.execute_script("return document.body.dataset.live") != "1":
            assert time.monotonic() < deadline, driver.find_element("id", "status").text
            time.sleep(0.1)
        assert driver.find_element("id", "food_eur").text == "–"
        time.sleep(1.0)  # the worker's live consumer is assigned at the end offsets

        # A producer connected beforehand, as a POS gateway is: the clock starts at the send.
        producer = Producer(producer_config(broker.bootstrap))  # murmur2, as the POS uses
        producer.list_topics(timeout=10)
        event = sc.receipt("R-LIVE-1", "ANNA", int(time.time() * 1000))
        topic, key, value, ts = encode_event(codec, event)
        sent = time.monotonic()
        producer.produce(topic, key=key, value=value, timestamp=ts)
        producer.poll(0)
        shown = None
        while time.monotonic() - sent < 10:
            if (
                driver.execute_script("return document.getElementById('food_eur').dataset.cents")
                == "450"
            ):
                shown = time.monotonic() - sent
                break
            time.sleep(0.05)
        assert producer.flush(10) == 0
        assert shown is not None, "the page never showed the receipt"
        print(f"counter change shown {shown * 1000:.0f} ms after the receipt was produced")
        assert shown <= 2.0, f"shown after {shown:.2f}s"
        # The whole counter screen followed: shares, carbon, receipts, household Bonus.
        texts = {i: driver.find_element("id", i).text for i in (
            "domestic_share_pct", "vegetable_share_pct", "co2e_kg", "receipt_count")}  # fmt: skip
        assert texts == {
            "domestic_share_pct": "100",
            "vegetable_share_pct": "33,3",
            "co2e_kg": "2,3",
            "receipt_count": "1",
        }, texts
        # The household Bonus card follows through the ledger (one more hop).
        deadline = time.monotonic() + 5
        while (
            driver.find_element("id", "eligible_eur").text != "4,50" and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert driver.find_element("id", "eligible_eur").text == "4,50"
        food = driver.find_element("css selector", "#card-food .sub")
        assert food.text == "1 receipt · 0 products not yet in the catalogue", food.text

        # A second receipt, one of its products not in the catalogue: counts in the plural
        # where they are plural and not where they are not ("1 product", never "1 products").
        second = sc.receipt("R-LIVE-2", "ANNA", int(time.time() * 1000))
        second["value"]["lines"][1]["gtin"] = "6400000099999"  # in no catalogue
        topic, key, value, ts = encode_event(codec, second)
        producer.produce(topic, key=key, value=value, timestamp=ts)
        assert producer.flush(10) == 0
        deadline = time.monotonic() + 10
        while driver.find_element("id", "receipt_count").text != "2":
            assert time.monotonic() < deadline, food.text
            time.sleep(0.05)
        assert food.text == "2 receipts · 1 product not yet in the catalogue", food.text
        shot = os.environ.get("PURCHASE_STREAM_SCREENSHOT")
        if shot:
            driver.save_screenshot(shot)
    finally:
        driver.quit()

    deadline = time.monotonic() + 5
    while not bert_events and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    # Bert got the household's joint Bonus change, and none of Anna's counters.
    assert bert_events and {k for k, _ in bert_events} == {"bonus"}
    for _kind, payload in bert_events:
        assert set(payload) == {"household_id", "month", "joint"}
        assert "C-ANNA" not in json.dumps(payload)

    # Opening the stream is a read of personal data: audited, like the refusals.
    audit = [codec.decode("audit.log", r.value) for r in read_all(broker.bootstrap, "audit.log")]
    live = {(a["actor"], a["outcome"]) for a in audit if a["action"] == "read_live"}
    assert {("C-ANNA", "ok"), ("C-BERT", "ok"), ("staff-7", "denied")} <= live
    assert ("unauthenticated", "unauthenticated") in live
