"""The embedded schema registry: a small threaded HTTP server speaking the Confluent REST
subset the client uses, backed by an :class:`~stream.serde.registry_store.InMemoryRegistry`
file; optionally with basic auth and TLS, so the production client's authenticated TLS path
is tested for real.

No Confluent-compatible registry is installable on the development machines, and ``mock://``
registries live in one process only; this lets a POS producer and several workers share ids
through the real HTTP client (``purchase-stream registry``, the demo, the tests).
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import ssl
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from stream.serde.registry_store import (
    CONTENT_TYPE,
    InMemoryRegistry,
    InvalidSchemaError,
    RegistryError,
    SchemaNotFoundError,
    backward_compatible,
)

_SUBJECT_VERSIONS = re.compile(r"^/subjects/([^/]+)/versions/?$")
_SUBJECT_VERSION = re.compile(r"^/subjects/([^/]+)/versions/([^/]+)/?$")
_SUBJECT_VERSION_SCHEMA = re.compile(r"^/subjects/([^/]+)/versions/([^/]+)/schema/?$")
_SUBJECT = re.compile(r"^/subjects/([^/]+)/?$")
_COMPATIBILITY = re.compile(r"^/compatibility/subjects/([^/]+)/versions/([^/]+)/?$")
_SCHEMA_ID = re.compile(r"^/schemas/ids/(\d+)/?$")
_SCHEMA_ID_SCHEMA = re.compile(r"^/schemas/ids/(\d+)/schema/?$")


class _Handler(BaseHTTPRequestHandler):
    server: _RegistryHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: the Confluent client reuses connections
    _raw_body = b""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request on stderr is noise in tests and worker logs

    def _send(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, code: int, message: str) -> None:
        self._send(status, {"error_code": code, "message": message})

    def _dispatch(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        try:
            # Read the whole body before anything can fail: on a keep-alive connection unread
            # body bytes would be parsed as the next request.
            length = int(self.headers.get("Content-Length") or 0)
            self._raw_body = self.rfile.read(length) if length > 0 else b""
            if not self._authorized():
                self._error(HTTPStatus.UNAUTHORIZED, 40101, "unauthorized")
                return
            result = self._route(method, path, self.server.registry)
        except SchemaNotFoundError as exc:
            self._error(HTTPStatus.NOT_FOUND, exc.error_code, str(exc))
        except RegistryError as exc:
            self._error(exc.status, exc.error_code, str(exc))
        except ValueError as exc:  # unreadable request (length, body JSON)
            self._error(HTTPStatus.BAD_REQUEST, HTTPStatus.BAD_REQUEST, f"bad request: {exc}")
        except Exception as exc:  # noqa: BLE001 - answer 500 rather than drop the connection
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, 50001, f"internal error: {exc!r}")
        else:
            if result is None:
                self._error(HTTPStatus.NOT_FOUND, HTTPStatus.NOT_FOUND, "HTTP 404 Not Found")
            else:
                self._send(HTTPStatus.OK, result)

    def _authorized(self) -> bool:
        expected = self.server.basic_auth
        if expected is None:
            return True
        scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:
            return False
        return hmac.compare_digest(given, expected)  # constant time: no timing oracle

    def _route(self, method: str, path: str, registry: InMemoryRegistry) -> Any:
        unq = urllib.parse.unquote
        if method == "GET":
            if path in ("", "/"):
                return {}
            if path.rstrip("/") == "/subjects":
                return registry.subjects()
            if path.rstrip("/") == "/config":
                return {"compatibilityLevel": "BACKWARD"}
            if m := _SCHEMA_ID.match(path):
                return {"schema": registry.get_schema(int(m[1]))}
            if m := _SCHEMA_ID_SCHEMA.match(path):
                return json.loads(registry.get_schema(int(m[1])))
            if m := _SUBJECT_VERSIONS.match(path):
                return registry.versions(unq(m[1]))
            if m := _SUBJECT_VERSION.match(path):
                return registry.get_version(unq(m[1]), m[2]).to_json()
            if m := _SUBJECT_VERSION_SCHEMA.match(path):
                return json.loads(registry.get_version(unq(m[1]), m[2]).schema)
            return None
        if method == "POST":
            if m := _SUBJECT_VERSIONS.match(path):
                text = self._schema_from_body()
                return {"id": registry.register(unq(m[1]), text)}
            if m := _SUBJECT.match(path):
                return registry.lookup(unq(m[1]), self._schema_from_body()).to_json()
            if m := _COMPATIBILITY.match(path):
                latest = registry.get_version(unq(m[1]), m[2]).schema
                ok, why = backward_compatible(self._schema_from_body(), latest)
                return {"is_compatible": ok, **({} if ok else {"messages": [why]})}
            return None
        return None

    def _schema_from_body(self) -> str:
        body = json.loads(self._raw_body or b"{}")
        if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
            raise InvalidSchemaError('the body must be {"schema": "<schema JSON text>"}')
        if body.get("schemaType", "AVRO") != "AVRO" or body.get("references"):
            raise InvalidSchemaError("only AVRO schemas without references are supported")
        return str(body["schema"])

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")


class _RegistryHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        registry: InMemoryRegistry,
        basic_auth: bytes | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.registry = registry
        self.basic_auth = basic_auth  # b"user:password", or None: no authentication
        self.tls = tls
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the request's thread, not in the accept loop, so a
        # client that never completes it cannot stall the server.
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # e.g. a client that does not trust our certificate
        super().finish_request(request, client_address)


# serve_forever's shutdown check interval; the default 0.5 s makes every stop() take 0.5 s.
_POLL_S = 0.05


class EmbeddedRegistryServer:
    """A Confluent-REST-compatible schema registry in a thread, persisted to ``path``.

    ``port=0`` picks a free port; :attr:`url` is valid after :meth:`start`. With
    ``basic_auth=(user, password)`` every request needs those credentials (401 otherwise), and
    with ``certfile``/``keyfile`` (PEM) it serves HTTPS: local runs and tests of the production
    client's authenticated TLS path.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str | Path | None = None,
        *,
        basic_auth: tuple[str, str] | None = None,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = InMemoryRegistry(path)
        self._basic_auth = None if basic_auth is None else ":".join(basic_auth).encode()
        self._tls: ssl.SSLContext | None = None
        if certfile is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(str(certfile), None if keyfile is None else str(keyfile))
        self._server: _RegistryHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("registry server is not started")
        host, port = self._server.server_address[:2]
        return f"{'https' if self._tls else 'http'}://{host!s}:{port}"

    def _bind(self) -> _RegistryHTTPServer:
        if self._server is not None:
            raise RuntimeError("registry server is already started")
        self._server = _RegistryHTTPServer(
            (self.host, self.port), self.registry, self._basic_auth, self._tls
        )
        return self._server

    def start(self) -> EmbeddedRegistryServer:
        """Serve in a daemon thread; returns at once, ready for requests."""
        server = self._bind()
        self._thread = threading.Thread(
            target=server.serve_forever, args=(_POLL_S,), name="schema-registry", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (e.g. from a signal handler)."""
        self._bind().serve_forever(_POLL_S)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> EmbeddedRegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
