"""The API under attack, over real HTTP against a worker on the real broker (issue 17).

Forged and unsigned tokens, expired ones, the wrong audience or issuer, cross-household and
member-to-main requests, staff without a purpose, path traversal, 1-100 KB paths, oversized
bodies and headers, a malformed and a 1 MB recall, a short concurrent burst, and a
hypothesis run over the paths of ``docs/openapi.yaml``. It counts: 0 answers 5xx, 0 data
leaks, exactly one audit record per request, 0 ids in the worker's log and ``/metrics``.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.local.broker import EmbeddedBroker
from stream.local.offsets import read_all
from stream.local.registry_server import EmbeddedRegistryServer
from stream.serde.codec import Codec
from stream.serde.registry_client import ConfluentRegistryClient
from stream.serve import auth
from stream.settings import load_rules
from tests.integration import api_scenario as sc
from tests.integration.worker_harness import WorkerProcess, produce_events

IDS = ("C-ANNA", "C-BERT", "C-OLLI", "CARD-ANNA", "CARD-BERT", "CARD-OLLI", "HH-A", "HH-B")


class Edge:
    """One worker with the scenario's data, and a log of every request sent to it."""

    def __init__(self, worker: WorkerProcess, codec: Codec, bootstrap: str, month: str) -> None:
        self.worker, self.codec, self.bootstrap, self.month = worker, codec, bootstrap, month
        self.port = worker.web_port
        self.sent: list[tuple[str, int]] = []  # (path, status) of every request

    def request(
        self,
        path: str,
        token: str | None = None,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if body is not None:
            h["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
        finally:
            conn.close()
        self.sent.append((path.split("?")[0], status))
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw

    def audit_records(self) -> list[dict[str, Any]]:
        return [
            self.codec.decode("audit.log", r.value)
            for r in read_all(self.bootstrap, "audit.log", timeout=20)
        ]


@pytest.fixture(scope="module")
def edge(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("api-edge")
    broker = broker_factory("api-edge", topics=True)
    registry = EmbeddedRegistryServer("127.0.0.1", 0, tmp / "schemas.json").start()
    worker = WorkerProcess(
        broker.bootstrap, registry.url, tmp / "worker", app_id=f"edge-{uuid.uuid4().hex[:8]}",
        extra_env={"PURCHASE_STREAM_API_JWT_SECRET": sc.SECRET},
    ).start()  # fmt: skip
    try:
        codec = Codec(ConfluentRegistryClient(registry.url))
        now = int(time.time() * 1000)
        produce_events(broker.bootstrap, codec, sc.world(now - 60_000))
        produce_events(
            broker.bootstrap,
            codec,
            [sc.receipt("R-A1", "ANNA", now - 30_000), sc.receipt("R-B1", "BERT", now - 10_000)],
        )
        sc.wait_http(worker.web_port)
        worker.wait_idle()
        yield Edge(worker, codec, broker.bootstrap, load_rules().local_month(now))
    finally:
        worker.stop()
        registry.stop()


def _forge(claims: dict[str, Any], alg: str = "none") -> str:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims)}."


def _claims(**change: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "C-ANNA", "role": "customer", "iss": auth.ISSUER, "aud": auth.AUDIENCE,
            "iat": now, "exp": now + 600}  # fmt: skip
    return base | change


def test_hostile_requests_are_refused_audited_once_and_leak_nothing(edge: Edge) -> None:
    month = edge.month
    anna, bert, olli = sc.token("ANNA"), sc.token("BERT"), sc.token("OLLI")
    staff = sc.staff_token()
    counters = f"/v1/me/counters/{month}"
    household = f"/v1/households/HH-A/bonus/{month}"
    before = len(edge.audit_records())
    start = len(edge.sent)

    # Tokens: none, forged signature, unsigned (alg none), expired, wrong audience / issuer.
    bad_tokens = [
        None,
        jwt.encode(_claims(), "x" * 40, algorithm="HS256"),
        _forge(_claims()),
        jwt.encode(_claims(exp=int(time.time()) - 3600), sc.SECRET, algorithm="HS256"),
        jwt.encode(_claims(aud="another-service"), sc.SECRET, algorithm="HS256"),
        jwt.encode(_claims(iss="someone-else"), sc.SECRET, algorithm="HS256"),
    ]
    for tok in bad_tokens:
        status, body = edge.request(counters, tok)
        assert status == 401 and "C-ANNA" not in json.dumps(body)

    # Cross-household, a member asking for the main member's data, staff without a purpose.
    assert edge.request(household, olli)[0] == 403
    status, view = edge.request(household, bert)
    assert status == 200 and set(view) == {
        "household_id",
        "month",
        "main_member",
        "joint",
        "chains",
    }
    assert (
        edge.request("/v1/staff/customers/C-ANNA/extract?purpose=customer_request", bert)[0] == 403
    )
    assert edge.request("/v1/staff/customers/C-ANNA/extract", staff)[0] == 403

    # Path traversal and odd paths: never 5xx, never someone else's data.
    for path in (
        "/v1/me/../staff/customers/C-ANNA/extract",
        "/v1/me/counters/..%2F..%2Fetc%2Fpasswd",
        "/v1/households/HH-A%2F..%2FHH-B/bonus/" + month,
        "/v1/me/counters/%00",
        "/v1/staff/customers/C-ANNA%7C/extract?purpose=customer_request",
    ):
        status, body = edge.request(path, olli)
        assert status < 500 and "R-A1" not in json.dumps(body), (path, status)

    # Long paths (1, 10, 100 KB): 414 beyond 2 KiB, without the path in the log.
    for size in (1_000, 10_000, 100_000):
        status, _ = edge.request("/v1/staff/customers/C100359116/extract?" + "x" * size, anna)
        assert status == (414 if size > 2_048 else 403), size
    # Oversized headers and bodies.
    assert edge.request(counters, anna, headers={"X-Big": "y" * 10_000})[0] == 431
    assert edge.request(counters, anna, headers={"X-Big": "y" * 100_000})[0] == 431
    recall = {"gtin": sc.GTIN_MILK, "from": "2024-01-01", "to": "2024-01-02"}
    huge = json.dumps(recall | {"reason": "r" * 1_000_000}).encode()
    assert edge.request("/v1/staff/recalls", staff, "POST", huge)[0] == 413
    assert edge.request("/v1/staff/recalls", staff, "POST", b"{not json")[0] == 400
    assert edge.request("/v1/staff/recalls", staff, "POST", b"[1, 2]")[0] == 400
    assert edge.request("/v1/nowhere", anna)[0] == 404

    # A short bounded burst: 40 requests, 8 at a time.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: edge.request(counters, anna)[0], range(40)))
    assert set(answers) <= {200, 404}

    statuses = [s for _, s in edge.sent[start:]]
    assert max(statuses) < 500
    # Exactly one audit record per request, refusals included.
    records = edge.audit_records()[before:]  # acknowledged before each answer was sent
    assert len(records) == len(statuses)
    by_status = sorted(json.loads(r["detail"])["status"] for r in records)
    assert by_status == sorted(statuses)
    # The 1 MB recall was refused and audited as such; no recall request was written.
    assert not read_all(edge.bootstrap, "recall.requests", timeout=10)

    # No id in the worker's log or metrics (finding 3: a long request line logged its path).
    log_text = edge.worker.log_path.read_text(errors="replace")
    with urllib.request.urlopen(f"http://127.0.0.1:{edge.port}/metrics", timeout=10) as resp:  # noqa: S310
        metrics_text = resp.read().decode()
    for ident in (*IDS, "C100359116", "bytearray"):
        assert ident not in log_text, ident
        assert ident not in metrics_text, ident


MONTHS = st.one_of(
    st.just("2026-11"),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
)
IDENTS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


def _paths() -> st.SearchStrategy[str]:
    """Paths of docs/openapi.yaml with generated parameters (quoted as a client would)."""
    from urllib.parse import quote

    q = lambda s: quote(s, safe="")  # noqa: E731
    return st.one_of(
        MONTHS.map(lambda m: f"/v1/me/counters/{q(m)}"),
        MONTHS.map(lambda m: f"/v1/me/purchases/{q(m)}"),
        MONTHS.map(lambda m: f"/v1/me/receipts/{q(m)}"),
        st.just("/v1/me/extract"),
        st.just("/v1/me/household"),
        st.tuples(IDENTS, MONTHS).map(lambda t: f"/v1/households/{q(t[0])}/bonus/{q(t[1])}"),
        st.tuples(IDENTS, IDENTS).map(
            lambda t: f"/v1/staff/customers/{q(t[0])}/extract?purpose={q(t[1])}"
        ),
        st.tuples(IDENTS, MONTHS).map(
            lambda t: f"/v1/staff/customers/{q(t[0])}/receipts/{q(t[1])}?purpose=customer_request"
        ),
    )


@settings(max_examples=150, deadline=None)
@given(
    path=_paths(),
    who=st.sampled_from(["ANNA", "BERT", "OLLI", "staff", None]),
    body=st.one_of(
        st.none(),
        st.binary(max_size=300),
        st.dictionaries(st.text(max_size=8), st.text(max_size=20)),
    ),
)
def test_no_client_input_gets_a_5xx(edge: Edge, path: str, who: str | None, body: Any) -> None:
    token = sc.staff_token() if who == "staff" else (sc.token(who) if who else None)
    status, _ = edge.request(path, token)
    assert status < 500, (path, who, status)
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body else None)
    status, _ = edge.request("/v1/staff/recalls", token, "POST", raw)
    assert status < 500, ("recall", who, status)


def test_the_public_pages_are_served_counted_and_not_audited(edge: Edge) -> None:
    """The page, its icon and the API description carry no personal data: not audited
    (like /metrics and /healthz), and a browser's icon request is not a 404."""
    before = len(edge.audit_records())
    with urllib.request.urlopen(f"http://127.0.0.1:{edge.port}/favicon.ico", timeout=10) as r:  # noqa: S310
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/svg+xml"
        assert r.read().startswith(b"<svg")
    assert edge.request("/app/")[0] == 200
    assert edge.request("/v1/openapi.yaml")[0] == 200
    # A data request after them is audited: the trail is read up to it, and has only it
    # (audit.log has several partitions: the records are counted, not sliced in order).
    assert edge.request("/v1/me/counters/not-a-month", sc.token("PAGES"))[0] == 400
    records = edge.audit_records()
    assert len(records) == before + 1
    mine = [json.loads(r["detail"]) for r in records if r["actor"] == "C-PAGES"]
    assert mine == [{"endpoint": "/v1/me/counters/{month}", "status": 400}]
    with urllib.request.urlopen(f"http://127.0.0.1:{edge.port}/metrics", timeout=10) as r:  # noqa: S310
        metrics_text = r.read().decode()
    assert 'endpoint="/favicon.ico",status="200"' in metrics_text
