"""The API's surface: every route is documented, known to the audit layer, and nothing else
(no Faust /table/ pages) serves data."""

from __future__ import annotations

from pathlib import Path

import yaml

from stream.engine.app import create_app
from stream.serve.endpoints import ENDPOINTS, OPENAPI, UNAUDITED
from stream.settings import load_rules, load_settings

PUBLIC = {"/v1/openapi.yaml", "/app/", "/favicon.ico", "/healthz", "/metrics"}


def routes() -> set[str]:
    settings = load_settings(schema_registry_url="memory://", api_jwt_secret="k" * 40)
    app = create_app(settings, load_rules())
    return set(app.web.views)


def test_every_data_route_is_an_audited_endpoint_and_nothing_else_is_served() -> None:
    served = routes()
    # Each data route goes through Reads.serve / Recalls.start / LiveStream.handle (audited);
    # ENDPOINTS is that list. Anything else is public and carries no personal data.
    assert served - PUBLIC == set(ENDPOINTS)
    assert PUBLIC == UNAUDITED  # what the edge leaves unaudited is exactly the public pages
    assert not any(r.startswith(("/table", "/router", "/graph", "/stats")) for r in served)


def test_the_openapi_file_documents_exactly_the_api() -> None:
    doc = yaml.safe_load(Path(OPENAPI).read_text())
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == set(ENDPOINTS) | {"/v1/openapi.yaml"}
    for path, item in doc["paths"].items():
        for op in item.values():
            if path != "/v1/openapi.yaml":
                assert "401" in op["responses"], path
