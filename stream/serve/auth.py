"""Caller identity for the worker's API: HS256-signed JWTs with an expiry.

Tokens are issued by the member service (which owns logins) with a key shared through
settings (``api_jwt_secret``); the worker only verifies them. ``purchase-stream token``
mints one for development and tests. A token authenticates the person (and marks staff);
the household and the household role come from the card register the workers hold, never
from the token (docs/domain.md §1, §5): ``hh`` / ``hh_role`` claims of older tokens are ignored.

Claims:

=================  =========================================================================
``sub``            customer id (role ``customer``) or the staff member's id (role ``staff``)
``role``           ``customer`` or ``staff``
``iss``, ``aud``   must equal ``ISSUER`` and ``AUDIENCE``
``exp``, ``iat``   required; a token past ``exp`` is refused (30 s leeway for clock skew)
=================  =========================================================================
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from pydantic import SecretStr

from topologies.access import CUSTOMER, STAFF, Viewer

ALGORITHM = "HS256"
ISSUER = "s-mobiili-member-service"
AUDIENCE = "purchase-stream"
LEEWAY_S = 30
MIN_SECRET_BYTES = 32


class AuthError(Exception):
    """No token, or one that is forged, expired or malformed (HTTP 401)."""


def _key(secret: str | SecretStr) -> str:
    """The raw key; settings hold it as a SecretStr (never printed) until it signs or verifies."""
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def check_secret(secret: str | SecretStr) -> None:
    if len(_key(secret).encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"api_jwt_secret must be at least {MIN_SECRET_BYTES} bytes (HS256 key); "
            "set PURCHASE_STREAM_API_JWT_SECRET"
        )


def issue(
    secret: str | SecretStr,
    subject: str,
    *,
    role: str = CUSTOMER,
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    check_secret(secret)
    if role not in (CUSTOMER, STAFF):
        raise ValueError(f"role must be {CUSTOMER!r} or {STAFF!r}")
    t = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "role": role,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": t,
        "exp": t + ttl_s,
    }
    return jwt.encode(claims, _key(secret), algorithm=ALGORITHM)


def verify(secret: str | SecretStr, token: str) -> Viewer:
    """The caller a token identifies; :class:`AuthError` for anything not valid."""
    try:
        claims = jwt.decode(
            token,
            _key(secret),
            algorithms=[ALGORITHM],  # never "none", never a key-confused RS256
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token ({type(exc).__name__})") from None
    role, sub = claims.get("role"), claims.get("sub")
    if not isinstance(sub, str) or not sub or "|" in sub:
        raise AuthError("invalid token (subject)")
    if role == STAFF:
        return Viewer(STAFF, sub)
    if role == CUSTOMER:
        return Viewer(CUSTOMER, sub)
    raise AuthError("invalid token (role)")


def bearer(header: str | None, query_token: str | None = None) -> str:
    """The token of an ``Authorization: Bearer`` header (or ``?access_token=`` for
    EventSource, which cannot send headers)."""
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        raise AuthError("Authorization must be 'Bearer <token>'")
    if query_token:
        return query_token
    raise AuthError("no bearer token")
