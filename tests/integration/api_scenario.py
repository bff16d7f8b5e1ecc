"""A small household world for the API tests: two households, four people, one catalogue.

HH-A: ANNA (main member, every consent on) and BERT (member, product-level services off).
HH-B: OLLI (main member, every consent on).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from stream.serve import auth
from topologies.consent import FLAGS

SECRET = "integration-test-jwt-secret-0123456789abcdef"
GTIN_TOMATO = "6400000000031"  # Finnish vegetables, weighed
GTIN_MILK = "6400000000017"  # Finnish milk, 1 kg pack


def product(gtin: str, group: str, vegetable: bool, net: int | None) -> dict[str, Any]:
    return {
        "gtin": gtin,
        "name": group.lower(),
        "product_group": group,
        "food": True,
        "vegetable": vegetable,
        "origin": "FINNISH_RAW",
        "net_weight_grams": net,
        "co2e_kg_per_kg": 1.5,
    }


def world(t0: int) -> list[dict[str, Any]]:
    """Catalogue, cards and consents, all effective from ``t0``."""
    events: list[dict[str, Any]] = []
    for p in (
        product(GTIN_TOMATO, "VEGETABLES", True, None),
        product(GTIN_MILK, "MILK", False, 1000),
    ):
        events.append({"topic": "product.catalog", "key": p["gtin"], "value": p, "timestamp": t0})
    people = [
        ("ANNA", "HH-A", "MAIN_MEMBER", True),
        ("BERT", "HH-A", "MEMBER", False),
        ("OLLI", "HH-B", "MAIN_MEMBER", True),
    ]
    for name, hh, role, on in people:
        cid, card_no = f"C-{name}", f"CARD-{name}"
        events.append(
            {
                "topic": "customer.cards",
                "key": card_no,
                "timestamp": t0,
                "value": {
                    "card_number": card_no,
                    "customer_id": cid,
                    "household_id": hh,
                    "role": role,
                },
            }
        )
        flags = dict.fromkeys(FLAGS, True)
        if not on:
            flags["product_level_services"] = False
        events.append(
            {
                "topic": "customer.consents",
                "key": cid,
                "timestamp": t0,
                "value": {
                    "customer_id": cid,
                    "version": 1,
                    "effective_at": t0,
                    "source": "APP",
                    **flags,
                },
            }
        )
    return events


def receipt(rid: str, who: str, at: int, kilos_milli: int = 500) -> dict[str, Any]:
    lines = [
        {
            "line_no": 1,
            "gtin": GTIN_TOMATO,
            "unit": "KG",
            "quantity_milli": kilos_milli,
            "amount_cents": 300,
            "bonus_eligible": True,
        },
        {
            "line_no": 2,
            "gtin": GTIN_MILK,
            "unit": "PCS",
            "quantity_milli": 1000,
            "amount_cents": 150,
            "bonus_eligible": True,
        },
    ]
    return {
        "topic": "pos.receipts",
        "key": f"CARD-{who}",
        "timestamp": at,
        "value": {
            "receipt_id": rid,
            "store_id": "STORE-7",
            "chain": "PRISMA",
            "card_number": f"CARD-{who}",
            "purchased_at": at,
            "total_cents": 450,
            "bonus_eligible_cents": 450,
            "payment_method": "CASH",
            "original_receipt_id": None,
            "lines": lines,
        },
    }


def token(who: str, **kw: Any) -> str:
    """A customer token: the person only (household and role come from the card register)."""
    return auth.issue(SECRET, f"C-{who}", **kw)


def claiming_token(who: str, household_id: str, hh_role: str) -> str:
    """A validly signed token that *claims* a household and role (as older member-service
    tokens did): the worker must answer with what the register says instead."""
    import jwt

    now = int(time.time())
    claims = {
        "sub": f"C-{who}", "role": "customer", "hh": household_id, "hh_role": hh_role,
        "iss": auth.ISSUER, "aud": auth.AUDIENCE, "iat": now, "exp": now + 600,
    }  # fmt: skip
    return jwt.encode(claims, SECRET, algorithm=auth.ALGORITHM)


def staff_token(staff_id: str = "staff-7", **kw: Any) -> str:
    return auth.issue(SECRET, staff_id, role="staff", **kw)


def call(
    port: int, path: str, tok: str | None = None, method: str = "GET", body: Any = None
) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if tok is not None:
        req.add_header("Authorization", f"Bearer {tok}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data=data, timeout=15) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


def wait_http(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):  # noqa: S310
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"worker web server on :{port} did not answer")
