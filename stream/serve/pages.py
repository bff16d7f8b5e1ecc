"""The worker's public pages: the "My purchases" page, its icon and the API description.

They carry no personal data (the page fetches the caller's figures from the API with the
caller's token), so they are not audited (:data:`stream.serve.endpoints.UNAUDITED`); their
requests are counted in the metrics like every other.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web as aioweb

from stream.serve.endpoints import OPENAPI, WEB_DIR

# Browsers ask for /favicon.ico with every page: a small SVG (all current browsers take one
# under that name), cached for a day.
FAVICON = WEB_DIR / "favicon.svg"


async def app_page(_request: Any) -> Any:
    """``GET /app/``: the page (the token travels in the URL fragment, never to the server)."""
    return aioweb.Response(text=(WEB_DIR / "app.html").read_text(), content_type="text/html")


async def favicon(_request: Any) -> Any:
    """``GET /favicon.ico``: the page's icon."""
    return aioweb.Response(
        body=FAVICON.read_bytes(),
        content_type="image/svg+xml",
        headers={"Cache-Control": "max-age=86400"},
    )


async def openapi(_request: Any) -> Any:
    """``GET /v1/openapi.yaml``: the API's description (docs/openapi.yaml)."""
    return aioweb.Response(text=OPENAPI.read_text(), content_type="application/yaml")
