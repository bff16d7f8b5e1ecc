"""Who is asking: the caller's :class:`~topologies.access.Viewer` from the request's bearer
token (``Authorization: Bearer``, or ``access_token`` in the query for an EventSource, which
cannot set headers). No secret configured: 503; no token, or a bad one: 401.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from stream.serve import auth
from stream.serve.endpoints import Refusal
from topologies.access import Viewer


def viewer_of(secret: str | SecretStr | None, request: Any) -> Viewer:
    """The caller of ``request`` (raises :class:`Refusal` 503 / 401)."""
    if not secret:
        raise Refusal(503, "API disabled: set PURCHASE_STREAM_API_JWT_SECRET")
    try:
        token = auth.bearer(request.headers.get("Authorization"), request.query.get("access_token"))
        return auth.verify(secret, token)
    except auth.AuthError as exc:
        raise Refusal(401, str(exc)) from None
