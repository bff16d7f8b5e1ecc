"""The app-facing API over real HTTP, on two workers that share the partitions.

Every role of docs/domain.md §5, forged and expired tokens, cross-household attempts and staff
reads; every request is answered the same by either worker (the owner of the key answers),
and every read or refusal leaves exactly one audit record on the broker's ``audit.log``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream.local.broker import EmbeddedBroker
from stream.local.offsets import read_all
from stream.local.registry_server import EmbeddedRegistryServer
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.serve import auth
from stream.serve.endpoints import ENDPOINTS
from stream.settings import load_rules
from tests.integration import api_scenario as sc
from tests.integration.worker_harness import WorkerProcess, produce_events, wait_group_stable

pytestmark = pytest.mark.integration


def start_workers(bootstrap: str, registry_url: str, tmp_path: Path, n: int) -> list[WorkerProcess]:
    app_id = f"api-{uuid.uuid4().hex[:8]}"
    workers = []
    for i in range(n):
        w = WorkerProcess(
            bootstrap,
            registry_url,
            tmp_path / f"worker{i}",
            app_id=app_id,
            extra_env={"PURCHASE_STREAM_API_JWT_SECRET": sc.SECRET},
        )
        w.env["PURCHASE_STREAM_CANONICAL_URL"] = f"http://127.0.0.1:{w.web_port}"
        workers.append(w.start())
    return workers


def audit_records(bootstrap: str, codec: Codec) -> list[dict[str, Any]]:
    return [
        codec.decode("audit.log", r.value) for r in read_all(bootstrap, "audit.log", timeout=20)
    ]


def test_api_roles_tokens_routing_and_audit(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path
) -> None:
    broker = broker_factory("api", topics=True)
    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp_path / "schemas.json").start()
    codec = Codec(ConfluentRegistryClient(registry.url))
    workers = start_workers(broker.bootstrap, registry.url, tmp_path, 2)
    try:
        wait_group_stable(workers, 4)
        now = int(time.time() * 1000)
        month = load_rules().local_month(now)
        produce_events(broker.bootstrap, codec, sc.world(now - 60_000))
        produce_events(
            broker.bootstrap,
            codec,
            [
                sc.receipt("R-A1", "ANNA", now - 30_000),
                sc.receipt("R-A2", "ANNA", now - 20_000, kilos_milli=1500),
                sc.receipt("R-B1", "BERT", now - 10_000),
                sc.receipt("R-O1", "OLLI", now - 5_000),
            ],
        )
        for w in workers:
            sc.wait_http(w.web_port)
        workers[0].wait_idle()
        time.sleep(2)  # let both workers settle on the same assignment
        before = len(audit_records(broker.bootstrap, codec))

        anna = sc.token("ANNA")
        bert = sc.token("BERT")
        olli = sc.token("OLLI")
        staff = sc.staff_token()
        expected_audit: Counter[tuple[Any, ...]] = Counter()
        answers: dict[str, list[tuple[int, Any]]] = {}

        def ask(
            label: str,
            path: str,
            tok: str | None,
            status: int,
            audit: tuple[Any, ...] | None,
        ) -> Any:
            # The same request to both workers: the same answer (one of them forwards it).
            got = [sc.call(w.web_port, path, tok) for w in workers]
            assert got[0] == got[1], (label, got)
            assert got[0][0] == status, (label, got[0])
            if audit is not None:
                expected_audit[audit] += 2
            answers[label] = got
            return got[0][1]

        # --- the purchaser: own counters, own product-level purchases, own totals --------
        c = ask("anna counters", f"/v1/me/counters/{month}", anna, 200,
                ("C-ANNA", "read_counters", "C-ANNA", "ok"))  # fmt: skip
        assert c["receipt_count"] == 2
        # Tomatoes by weight (0.5 + 1.5 kg) and two 1 kg milk packs, all Finnish raw food.
        assert (c["food_cents"], c["finnish_raw_cents"]) == (900, 900)
        assert (c["food_grams"], c["vegetable_grams"]) == (4000, 2000)
        assert c["co2e_grams"] == 6000
        assert (c["domestic_share_pct"], c["vegetable_share_pct"]) == (100.0, 50.0)
        p = ask("anna purchases", f"/v1/me/purchases/{month}", anna, 200,
                ("C-ANNA", "read_purchases", "C-ANNA", "ok"))  # fmt: skip
        assert [r["receipt_id"] for r in p["receipts"]] == ["R-A1", "R-A2"]
        r = ask("anna receipts", f"/v1/me/receipts/{month}", anna, 200,
                ("C-ANNA", "read_receipts", "C-ANNA", "ok"))  # fmt: skip
        assert r["total_cents"] == 900
        # Bert switched product-level services off: no counters, no product-level data.
        ask("bert counters", f"/v1/me/counters/{month}", bert, 404,
            ("C-BERT", "read_counters", "C-BERT", "not_found"))  # fmt: skip
        p = ask("bert purchases", f"/v1/me/purchases/{month}", bert, 200,
                ("C-BERT", "read_purchases", "C-BERT", "ok"))  # fmt: skip
        assert p["receipts"] == []
        r = ask("bert receipts", f"/v1/me/receipts/{month}", bert, 200,
                ("C-BERT", "read_receipts", "C-BERT", "ok"))  # fmt: skip
        assert [x["receipt_id"] for x in r["receipts"]] == ["R-B1"]
        ex = ask("anna extract", "/v1/me/extract", anna, 200,
                 ("C-ANNA", "read_extract", "C-ANNA", "ok"))  # fmt: skip
        assert ex["customer_id"] == "C-ANNA" and list(ex["counters"]) == [month]
        assert "C-BERT" not in json.dumps(ex)

        # --- the household: main member, other member, outsiders -------------------------
        hpath = f"/v1/households/HH-A/bonus/{month}"
        h = ask("anna household", hpath, anna, 200,
                ("C-ANNA", "read_household_bonus", None, "ok"))  # fmt: skip
        assert h["bonus"]["eligible_cents"] == 1350 and h["bonus"]["receipt_count"] == 3
        assert sorted(x["receipt_id"] for x in h["receipts"]) == ["R-A1", "R-A2", "R-B1"]
        assert h["members"] == [
            {"customer_id": "C-ANNA", "role": "MAIN_MEMBER"},
            {"customer_id": "C-BERT", "role": "MEMBER"},
        ]
        h = ask("bert household", hpath, bert, 200,
                ("C-BERT", "read_household_bonus", None, "ok"))  # fmt: skip
        assert set(h) == {"household_id", "month", "main_member", "joint", "chains"}
        assert h["main_member"] == "C-ANNA" and h["joint"]["eligible_cents"] == 1350
        assert h["chains"] == [
            {"chain": "PRISMA", "receipt_count": 3, "total_cents": 1350, "eligible_cents": 1350}
        ]
        # Another household's data: 403 whether or not it exists, never a hint.
        forbidden = ask("olli on HH-A", hpath, olli, 403,
                        ("C-OLLI", "read_household_bonus", None, "denied"))  # fmt: skip
        nothing = ask("olli on HH-NONE", f"/v1/households/HH-NONE/bonus/{month}", olli, 403,
                      ("C-OLLI", "read_household_bonus", None, "denied"))  # fmt: skip
        assert forbidden == nothing == {"error": "forbidden"}
        # A token whose claims contradict the register gets the register's answer: Bert
        # claiming to be HH-A's main member sees the member view; Olli claiming HH-A is
        # refused (the finding: a claimed main member got the per-member sums).
        claimed = sc.claiming_token("BERT", "HH-A", "main")
        h = ask("bert claiming main", hpath, claimed, 200,
                ("C-BERT", "read_household_bonus", None, "ok"))  # fmt: skip
        assert set(h) == {"household_id", "month", "main_member", "joint", "chains"}
        ask("olli claiming HH-A", hpath, sc.claiming_token("OLLI", "HH-A", "main"), 403,
            ("C-OLLI", "read_household_bonus", None, "denied"))  # fmt: skip
        m = ask("bert membership", "/v1/me/household", bert, 200,
                ("C-BERT", "read_membership", "C-BERT", "ok"))  # fmt: skip
        assert (m["household_id"], m["role"]) == ("HH-A", "MEMBER")

        # --- tokens -----------------------------------------------------------------------
        unauth = ("unauthenticated", "read_counters", None, "unauthenticated")
        ask("no token", f"/v1/me/counters/{month}", None, 401, unauth)
        forged = auth.issue("x" * 40, "C-ANNA")
        ask("forged", f"/v1/me/counters/{month}", forged, 401, unauth)
        expired = sc.token("ANNA", ttl_s=10, now=time.time() - 3600)
        ask("expired", f"/v1/me/counters/{month}", expired, 401, unauth)
        # A bad request is audited too (it reached the API), as rejected.
        ask("bad month", "/v1/me/counters/2026-13", anna, 400,
            ("C-ANNA", "read_counters", None, "rejected"))  # fmt: skip

        # --- staff ------------------------------------------------------------------------
        spath = "/v1/staff/customers/C-BERT/extract"
        ex = ask("staff extract", f"{spath}?purpose=customer_request", staff, 200,
                 ("staff-7", "staff_read_extract", "C-BERT", "ok"))  # fmt: skip
        assert [x["receipt_id"] for x in ex["receipt_totals"]] == ["R-B1"]
        ask("staff no purpose", spath, staff, 403,
            ("staff-7", "staff_read_extract", "C-BERT", "denied"))  # fmt: skip
        ask("customer as staff", f"{spath}?purpose=customer_request", anna, 403,
            ("C-ANNA", "staff_read_extract", "C-BERT", "denied"))  # fmt: skip
        r = ask("staff receipts",
                f"/v1/staff/customers/C-ANNA/receipts/{month}?purpose=customer_request",
                staff, 200, ("staff-7", "staff_read_receipts", "C-ANNA", "ok"))  # fmt: skip
        assert r["total_cents"] == 900

        # --- recalls: staff only; opted-out buyers are found -------------------------------
        status, body = sc.call(
            workers[1].web_port, "/v1/staff/recalls", anna, "POST",
            {"gtin": sc.GTIN_MILK, "from": "2020-01-01", "to": "2021-12-31"},
        )  # fmt: skip
        assert status == 403
        expected_audit[("C-ANNA", "recall_requested", None, "denied")] += 1
        today = load_rules().local_date(now)
        status, body = sc.call(
            workers[1].web_port, "/v1/staff/recalls", staff, "POST",
            {"gtin": sc.GTIN_MILK, "from": today, "to": today, "reason": "Listeria"},
        )  # fmt: skip
        assert status == 202, body
        recall_id = body["recall_id"]
        expected_audit[("staff-7", "recall_requested", None, "ok")] += 1
        for cid in ("C-ANNA", "C-BERT", "C-OLLI"):
            expected_audit[("staff-7", "recall", cid, "ok")] += 1
        expected_audit[("staff-7", "recall", None, "ok")] += 4  # one summary per partition

        deadline = time.monotonic() + 60
        while True:
            notes = [
                codec.decode("recall.notifications", rec.value)
                for rec in read_all(broker.bootstrap, "recall.notifications", timeout=10)
            ]
            found = {n["customer_id"] for n in notes if n["recall_id"] == recall_id}
            if found == {"C-ANNA", "C-BERT", "C-OLLI"} or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert found == {"C-ANNA", "C-BERT", "C-OLLI"}  # Bert opted out, and is found

        # --- the audit trail: one record per read or refusal, nothing else ----------------
        deadline = time.monotonic() + 30
        while True:
            records = audit_records(broker.bootstrap, codec)[before:]
            got = Counter(
                (a["actor"], a["action"], a["subject_customer_id"], a["outcome"]) for a in records
            )
            if got == expected_audit or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert got == expected_audit
        for a in records:
            assert a["purpose"] and a["at"] > now - 120_000
        staff_reads = [a for a in records if a["actor"] == "staff-7" and "read" in a["action"]]
        assert {a["purpose"] for a in staff_reads} == {"customer_request", "unstated"}

        # Every personal-data route was exercised above and audited.
        exercised = {json.loads(a["detail"]).get("endpoint") for a in records}
        assert set(ENDPOINTS) - {"/v1/me/live"} <= exercised | {"/v1/staff/recalls"}
        for w in workers:
            assert w.proc is not None and w.proc.poll() is None, w.log_tail()
    finally:
        for w in workers:
            w.stop()
        registry.stop()
