"""The API's routes and request vocabulary: route templates (the only values of the metrics'
``endpoint`` label), parameter patterns, and :class:`Refusal`, the answer a handler gives by
raising it (turned into a JSON error response, and audited, by :mod:`stream.serve.edge`).
"""

from __future__ import annotations

import re
from pathlib import Path

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
GTIN = re.compile(r"^\d{8,14}$")
OWN_PURPOSE = "own_data_access"
WEB_DIR = Path(__file__).resolve().parent / "web"
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"

# Route templates: the only values of the metrics' endpoint label.
E_COUNTERS = "/v1/me/counters/{month}"
E_PURCHASES = "/v1/me/purchases/{month}"
E_RECEIPTS = "/v1/me/receipts/{month}"
E_EXTRACT = "/v1/me/extract"
E_MEMBERSHIP = "/v1/me/household"
E_HOUSEHOLD = "/v1/households/{household_id}/bonus/{month}"
E_STAFF_EXTRACT = "/v1/staff/customers/{customer_id}/extract"
E_STAFF_RECEIPTS = "/v1/staff/customers/{customer_id}/receipts/{month}"
E_STAFF_RECALL = "/v1/staff/recalls"
E_LIVE = "/v1/me/live"
ENDPOINTS = (
    E_COUNTERS,
    E_PURCHASES,
    E_RECEIPTS,
    E_EXTRACT,
    E_MEMBERSHIP,
    E_HOUSEHOLD,
    E_STAFF_EXTRACT,
    E_STAFF_RECEIPTS,
    E_STAFF_RECALL,
    E_LIVE,
)

# Operational pages: no personal data, not audited (scraped every few seconds, or fetched by
# a browser with every page: the page, its icon, the API description).
P_APP = "/app/"
P_FAVICON = "/favicon.ico"
P_OPENAPI = "/v1/openapi.yaml"
UNAUDITED = frozenset({"/metrics", "/healthz", P_APP, P_FAVICON, P_OPENAPI})
ROUTES = frozenset(ENDPOINTS) | UNAUDITED


class Refusal(Exception):
    """A request answered with ``status`` and ``{"error": error}``, no data."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def month_problem(month: str) -> str | None:
    """Why ``month`` is not a valid ``YYYY-MM`` path parameter (None: it is)."""
    return None if MONTH.match(month) else "month must be YYYY-MM"
