"""Bearer JWTs: what is accepted, and every way a token is refused."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from stream.serve import auth
from topologies import access

SECRET = "s" * 40
OTHER = "o" * 40


def customer(**kw: object) -> str:
    return auth.issue(SECRET, "C-1", **kw)  # type: ignore[arg-type]


def test_a_customer_token_gives_the_caller_only() -> None:
    # The person only: household and role come from the card register, not the token.
    viewer = auth.verify(SECRET, customer())
    assert viewer == access.Viewer(access.CUSTOMER, "C-1")


def test_a_staff_token_has_no_household() -> None:
    viewer = auth.verify(SECRET, auth.issue(SECRET, "staff-7", role="staff"))
    assert viewer == access.Viewer(access.STAFF, "staff-7")


def test_a_token_signed_with_another_key_is_refused() -> None:
    with pytest.raises(auth.AuthError, match="invalid token"):
        auth.verify(SECRET, auth.issue(OTHER, "C-1"))


def test_an_expired_token_is_refused_after_the_leeway() -> None:
    old = customer(ttl_s=60, now=time.time() - 60 - auth.LEEWAY_S - 5)
    with pytest.raises(auth.AuthError, match="expired"):
        auth.verify(SECRET, old)
    recent = customer(ttl_s=60, now=time.time() - 70)  # 10 s past exp: within the leeway
    assert auth.verify(SECRET, recent).subject == "C-1"


def _forge(claims: dict, header: dict) -> str:
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{b64(header)}.{b64(claims)}."


def test_an_unsigned_token_is_refused() -> None:
    claims = jwt.decode(customer(), options={"verify_signature": False})
    with pytest.raises(auth.AuthError):
        auth.verify(SECRET, _forge(claims, {"alg": "none", "typ": "JWT"}))


def test_a_tampered_claim_breaks_the_signature() -> None:
    head, body, sig = customer().split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["sub"] = "C-2"  # try to read someone else's data
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(auth.AuthError):
        auth.verify(SECRET, f"{head}.{forged_body}.{sig}")


def valid_claims() -> dict:
    """Claims that verify (checked below), for the tests that break one of them."""
    now = int(time.time())
    return {
        "sub": "C-1",
        "role": "customer",
        "iss": auth.ISSUER,
        "aud": auth.AUDIENCE,
        "iat": now,
        "exp": now + 60,
    }


def test_the_valid_claims_verify() -> None:
    token = jwt.encode(valid_claims(), SECRET, algorithm="HS256")
    assert auth.verify(SECRET, token) == access.Viewer(access.CUSTOMER, "C-1")


def test_household_claims_are_ignored() -> None:
    # A token minted for C-1 as main member of HH-1 (the finding): the claims carry no
    # weight; the worker asks the card register (stream/serve/reads.py, topologies/access.py).
    claims = valid_claims() | {"hh": "HH-1", "hh_role": "main"}
    viewer = auth.verify(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))
    assert (viewer.household_id, viewer.household_role) == (None, None)


@pytest.mark.parametrize("drop", ["exp", "iat", "sub", "iss", "aud"], ids=lambda d: f"without-{d}")
def test_required_claims(drop: str) -> None:
    claims = valid_claims()
    del claims[drop]
    with pytest.raises(auth.AuthError):
        auth.verify(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))


@pytest.mark.parametrize(
    "change",
    [
        {"iss": "someone-else"},
        {"aud": "another-service"},
        {"role": "admin"},
        {"sub": "C|1"},
    ],
    ids=str,
)
def test_bad_claims_are_refused(change: dict) -> None:
    claims = valid_claims() | change
    with pytest.raises(auth.AuthError):
        auth.verify(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))


def test_bearer_header_parsing() -> None:
    assert auth.bearer("Bearer abc") == "abc"
    assert auth.bearer(None, "from-query") == "from-query"
    for bad in ("Basic abc", "Bearer ", "abc"):
        with pytest.raises(auth.AuthError):
            auth.bearer(bad)
    with pytest.raises(auth.AuthError, match="no bearer token"):
        auth.bearer(None, None)


def test_issuing_checks_the_key_and_claims() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        auth.issue("short", "C-1")
    with pytest.raises(ValueError, match="role"):
        auth.issue(SECRET, "C-1", role="admin")
