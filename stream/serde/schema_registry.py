"""Schema registries: where Avro schema ids (the 4 bytes after the magic byte) come from.

The codec needs two operations -- register a schema under a subject and get its id, and get a
schema by id -- captured by :class:`SchemaRegistry`. Implementations:

- :class:`InMemoryRegistry`: ids in a dict; optionally persisted to a JSON file so ids survive a
  restart (``replay``) and can be shared by processes on one machine (``file://`` URLs).
- :class:`ConfluentRegistryClient` (also known as ``HttpRegistryClient``): confluent-kafka's
  ``SchemaRegistryClient`` (basic auth, TLS, retries, caches) behind our interface; production
  (Confluent Schema Registry, Karapace) and multi-process local runs.
- :class:`EmbeddedRegistryServer`: a small threaded HTTP server speaking the REST subset the
  client uses, backed by an :class:`InMemoryRegistry` file; optionally with basic auth and TLS,
  so the production client's authenticated TLS path is tested for real. No
  Confluent-compatible registry is installable on the development machines, and ``mock://``
  registries live in one process only; this lets a POS producer and several workers share ids
  through the real HTTP client.

Ids are global, as in Confluent's registry: the same schema gets the same id in every subject.
"Same" means the same JSON after parsing (key order and whitespace do not matter).

Compatibility is BACKWARD, Confluent's default: a new version of a subject must be able to
read data written with the latest version (added fields need defaults). The check is Apache
Avro's own (``avro.compatibility``, the Python port of the Java checker the Confluent registry
uses), not ours; a refused version answers 409 as Confluent's does.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hmac
import json
import os
import re
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import fastavro
from pydantic import SecretStr

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

# Confluent's error codes, so clients that switch on them behave as against the real server.
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
INVALID_SCHEMA = 42201
INCOMPATIBLE_SCHEMA = 409
INVALID_VERSION = 42202


class RegistryError(Exception):
    """A registry request failed. ``status``/``error_code`` follow the Confluent REST API."""

    def __init__(self, message: str, status: int = 500, error_code: int = 50001) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class SchemaNotFoundError(RegistryError, KeyError):
    """No such schema id, subject or version. Not transient: retrying will not help."""

    def __init__(self, message: str, error_code: int = SCHEMA_NOT_FOUND) -> None:
        super().__init__(message, HTTPStatus.NOT_FOUND, error_code)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class InvalidSchemaError(RegistryError):
    """The schema text is not a valid Avro schema."""

    def __init__(self, message: str) -> None:
        super().__init__(message, HTTPStatus.UNPROCESSABLE_ENTITY, INVALID_SCHEMA)


class IncompatibleSchemaError(RegistryError):
    """The schema cannot read data written with the subject's latest version (BACKWARD)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, HTTPStatus.CONFLICT, INCOMPATIBLE_SCHEMA)


def backward_compatible(reader_text: str, writer_text: str) -> tuple[bool, str]:
    """Can ``reader_text`` read data written with ``writer_text``? (Apache Avro's checker.)"""
    import avro.schema
    from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(reader_text), avro.schema.parse(writer_text)
    )
    ok = result.compatibility is SchemaCompatibilityType.compatible
    return ok, "" if ok else "; ".join(sorted(str(m) for m in result.messages))


class RegistryUnavailableError(RegistryError):
    """The registry could not be reached or answered nonsense; probably transient."""


class RegistryAccessError(RegistryError):
    """The registry refused the credentials, or its TLS certificate is not trusted: a
    configuration error, not an outage (the worker and the CLI stop at start)."""


class SchemaRegistry(Protocol):
    def register(self, subject: str, schema_text: str) -> int:
        """Register ``schema_text`` under ``subject``; return its id. Idempotent."""
        ...

    def get_schema(self, schema_id: int) -> str:
        """The schema text with this id; raises :class:`SchemaNotFoundError` if none."""
        ...


@dataclass(frozen=True)
class RegisteredSchema:
    subject: str
    version: int
    id: int
    schema: str

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "version": self.version,
            "id": self.id,
            "schema": self.schema,
        }


def normalize(schema_text: str) -> str:
    """The identity of a schema: its JSON re-serialised with sorted keys and no whitespace."""
    try:
        return json.dumps(json.loads(schema_text), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidSchemaError(f"schema is not JSON: {exc}") from exc


def _check_avro(schema_text: str) -> None:
    try:
        fastavro.parse_schema(json.loads(schema_text), named_schemas={})
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise InvalidSchemaError(f"invalid Avro schema: {exc}") from exc


class InMemoryRegistry:
    """Schema ids in memory, optionally persisted to a JSON file.

    With ``path``, every new registration is written to the file (atomically) under an
    exclusive ``flock``, and the file is re-read first, so processes sharing the file assign
    distinct ids and see each other's schemas. Look-ups that miss re-read the file for the same
    reason.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.RLock()
        self._by_id: dict[int, str] = {}
        self._by_norm: dict[str, int] = {}
        self._subjects: dict[str, list[int]] = {}  # subject -> ids, index = version - 1
        if self.path is not None and self.path.exists():
            self._load()

    # -- persistence --------------------------------------------------------------------

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> None:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except ValueError as exc:
            raise RegistryError(f"corrupt registry file {self.path}: {exc}") from exc
        self._by_id = {int(k): v for k, v in data.get("schemas", {}).items()}
        self._by_norm = {normalize(text): sid for sid, text in self._by_id.items()}
        self._subjects = {s: [int(i) for i in ids] for s, ids in data.get("subjects", {}).items()}

    def _save(self) -> None:
        assert self.path is not None
        data = {
            "schemas": {str(k): v for k, v in sorted(self._by_id.items())},
            "subjects": self._subjects,
        }
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.path)  # readers never see a half-written file

    # -- SchemaRegistry -------------------------------------------------------------------

    def register(self, subject: str, schema_text: str) -> int:
        norm = normalize(schema_text)
        with self._lock:
            sid = self._by_norm.get(norm)
            if sid is not None and sid in self._subjects.get(subject, ()):
                return sid  # fast path, no file access
            _check_avro(schema_text)
            with self._file_lock():
                if self.path is not None:
                    self._load()
                sid = self._by_norm.get(norm)
                versions = self._subjects.get(subject, [])
                if versions and sid not in versions:
                    ok, why = backward_compatible(schema_text, self._by_id[versions[-1]])
                    if not ok:
                        raise IncompatibleSchemaError(
                            f"schema is not BACKWARD compatible with version {len(versions)} "
                            f"of {subject}: {why}"
                        )
                changed = False
                if sid is None:
                    sid = max(self._by_id, default=0) + 1
                    self._by_id[sid] = schema_text
                    self._by_norm[norm] = sid
                    changed = True
                versions = self._subjects.setdefault(subject, [])
                if sid not in versions:
                    versions.append(sid)
                    changed = True
                if changed and self.path is not None:
                    self._save()
            return sid

    def get_schema(self, schema_id: int) -> str:
        with self._lock:
            text = self._by_id.get(schema_id)
            if text is None and self.path is not None:
                with self._file_lock():
                    self._load()
                text = self._by_id.get(schema_id)
        if text is None:
            raise SchemaNotFoundError(f"schema id {schema_id} not found")
        return text

    # -- the rest of the REST subset (used by the embedded server) -----------------------

    def subjects(self) -> list[str]:
        with self._lock:
            return sorted(self._subjects)

    def versions(self, subject: str) -> list[int]:
        with self._lock:
            ids = self._subjects.get(subject)
            if not ids:
                raise SchemaNotFoundError(f"subject {subject!r} not found", SUBJECT_NOT_FOUND)
            return list(range(1, len(ids) + 1))

    def get_version(self, subject: str, version: int | str) -> RegisteredSchema:
        """``version`` is a number from 1, or ``"latest"`` / ``-1``."""
        with self._lock:
            ids = self._subjects.get(subject)
            if not ids:
                raise SchemaNotFoundError(f"subject {subject!r} not found", SUBJECT_NOT_FOUND)
            if version in ("latest", -1, "-1"):
                number = len(ids)
            else:
                try:
                    number = int(version)
                except ValueError:
                    raise RegistryError(
                        f"invalid version {version!r}",
                        HTTPStatus.UNPROCESSABLE_ENTITY,
                        INVALID_VERSION,
                    ) from None
            if not 1 <= number <= len(ids):
                raise SchemaNotFoundError(
                    f"subject {subject!r} has no version {version}", VERSION_NOT_FOUND
                )
            sid = ids[number - 1]
            return RegisteredSchema(subject, number, sid, self._by_id[sid])

    def get_latest(self, subject: str) -> RegisteredSchema:
        return self.get_version(subject, "latest")

    def lookup(self, subject: str, schema_text: str) -> RegisteredSchema:
        """The subject version holding this schema; :class:`SchemaNotFoundError` if none."""
        norm = normalize(schema_text)
        with self._lock:
            ids = self._subjects.get(subject)
            if not ids:
                raise SchemaNotFoundError(f"subject {subject!r} not found", SUBJECT_NOT_FOUND)
            sid = self._by_norm.get(norm)
            if sid is None or sid not in ids:
                raise SchemaNotFoundError(f"schema not found in subject {subject!r}")
            return RegisteredSchema(subject, ids.index(sid) + 1, sid, self._by_id[sid])


class ConfluentRegistryClient:
    """The production client: confluent-kafka's ``SchemaRegistryClient`` behind our interface.

    Authentication (basic auth), TLS (a CA file), retries with backoff and the id/schema
    caches are confluent-kafka's, maintained upstream with the Confluent registry; this class
    only maps its errors onto ours, which the codec and the worker act on:

    - 404 -> :class:`SchemaNotFoundError` (a record with an unknown id is dead-lettered);
    - 5xx, 408, 429 or a network failure, after confluent's retries ->
      :class:`RegistryUnavailableError` (transient: the worker waits, nothing is dead-lettered);
    - 401/403, or a server certificate the CA file does not trust ->
      :class:`RegistryAccessError` (configuration: the worker and the CLI stop at start);
    - 422 invalid schema -> :class:`InvalidSchemaError`, 409 -> :class:`IncompatibleSchemaError`.
    """

    # Few, short retries: after them the codec raises RegistryUnavailableError and the
    # worker's own outage handling (the partition waits and retries) takes over.
    MAX_RETRIES = 2
    RETRY_WAIT_MS = 200
    RETRY_MAX_WAIT_MS = 2000

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        *,
        username: str = "",
        password: str | SecretStr = "",
        ca_file: str = "",
    ) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.url = url.rstrip("/")
        raw_password = password.get_secret_value() if isinstance(password, SecretStr) else password
        conf: dict[str, Any] = {
            "url": self.url,
            "timeout": timeout,
            "max.retries": self.MAX_RETRIES,
            "retries.wait.ms": self.RETRY_WAIT_MS,
            "retries.max.wait.ms": self.RETRY_MAX_WAIT_MS,
        }
        if username or raw_password:
            conf["basic.auth.user.info"] = f"{username}:{raw_password}"
        if ca_file:
            conf["ssl.ca.location"] = ca_file
        self._client = SchemaRegistryClient(conf)

    def __repr__(self) -> str:  # never the credentials
        return f"ConfluentRegistryClient({self.url!r})"

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        # The httpx (or httpx2) the client was built on, as its own module asks: its network
        # errors (refused, reset, timeout, TLS) escape the client after its retries.
        from confluent_kafka.schema_registry.common._httpx_compat import httpx
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return fn(*args)
        except SchemaRegistryError as exc:
            status, code = int(exc.http_status_code), int(exc.error_code)
            text = f"{what}: {status} {exc.error_message}"
            if status == HTTPStatus.NOT_FOUND:
                raise SchemaNotFoundError(text, code) from None
            if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
                raise RegistryAccessError(
                    f"{what}: the schema registry at {self.url} refused the credentials "
                    f"({status}); check schema_registry_username / schema_registry_password",
                    status,
                    code,
                ) from None
            if code == INVALID_SCHEMA or status == HTTPStatus.UNPROCESSABLE_ENTITY:
                raise InvalidSchemaError(text) from None
            if status == HTTPStatus.CONFLICT or code == INCOMPATIBLE_SCHEMA:
                raise IncompatibleSchemaError(text) from None
            if status >= 500 or status in (408, 429):
                raise RegistryUnavailableError(text, status, code) from None
            raise RegistryError(text, status, code) from None
        except httpx.TransportError as exc:
            if _is_certificate_error(exc):
                raise RegistryAccessError(
                    f"{what}: the schema registry's TLS certificate at {self.url} is not "
                    "trusted; check schema_registry_ca_file",
                    HTTPStatus.UNAUTHORIZED,
                ) from None
            raise RegistryUnavailableError(f"{what} at {self.url}: {exc!r}") from None

    def register(self, subject: str, schema_text: str) -> int:
        from confluent_kafka.schema_registry import Schema

        sid = self._call(
            f"register {subject}",
            self._client.register_schema,
            subject,
            Schema(schema_text, "AVRO"),
        )
        return int(sid)

    def get_schema(self, schema_id: int) -> str:
        schema = self._call(f"schema {schema_id}", self._client.get_schema, int(schema_id))
        return str(schema.schema_str)

    def get_latest(self, subject: str) -> RegisteredSchema:
        found = self._call(f"latest {subject}", self._client.get_latest_version, subject)
        return RegisteredSchema(
            str(found.subject or subject),
            int(found.version),
            int(found.schema_id),
            str(found.schema.schema_str),
        )

    def subjects(self) -> list[str]:
        return [str(s) for s in self._call("subjects", self._client.get_subjects)]


# The name the code and tests have always used for the HTTP registry client.
HttpRegistryClient = ConfluentRegistryClient


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):  # httpx wraps the ssl error's text
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# -- the embedded server ---------------------------------------------------------------------

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


_MEMORY_REGISTRIES: dict[str, InMemoryRegistry] = {}
_MEMORY_LOCK = threading.Lock()


def registry_from_url(
    url: str, *, username: str = "", password: str | SecretStr = "", ca_file: str = ""
) -> SchemaRegistry:
    """A registry for a ``schema_registry_url`` setting.

    - ``mock://<name>`` or ``memory://[<name>]``: in-memory, one per URL per process (like
      confluent-kafka's ``mock://``), so a producer and a worker in one test process share ids.
    - ``file://<path>``: in-memory, persisted to ``<path>`` (JSON).
    - ``http://`` / ``https://``: a Confluent-compatible registry over REST
      (:class:`ConfluentRegistryClient`), with basic-auth credentials and a CA file if given.
    """
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if (username or password or ca_file) and scheme not in ("http", "https"):
        raise ValueError("schema registry credentials or a CA file need an http(s):// registry URL")
    if scheme in ("mock", "memory"):
        with _MEMORY_LOCK:
            return _MEMORY_REGISTRIES.setdefault(url, InMemoryRegistry())
    if scheme == "file":
        if not rest:
            raise ValueError(f"file:// registry URL without a path: {url!r}")
        return InMemoryRegistry(urllib.parse.unquote(rest))
    if scheme in ("http", "https"):
        return ConfluentRegistryClient(url, username=username, password=password, ca_file=ca_file)
    raise ValueError(
        f"unsupported schema registry URL {url!r} (mock://, memory://, file://, http(s)://)"
    )


def check_access(registry: SchemaRegistry) -> None:
    """Raise :class:`RegistryAccessError` now if an HTTP registry refuses our credentials or
    certificate (a read: tools may hold read-only credentials); other registries always pass.
    For commands that should stop at start rather than on their first record."""
    if isinstance(registry, ConfluentRegistryClient):
        try:
            registry.subjects()
        except RegistryAccessError:
            raise
        except RegistryError:
            pass  # an outage or an odd answer: the command's own error handling applies


def registry_from_settings(settings: Any) -> SchemaRegistry:
    """The registry the settings name, with their credentials and CA file (stream/settings.py)."""
    return registry_from_url(
        settings.schema_registry_url,
        username=settings.schema_registry_username,
        password=settings.schema_registry_password,
        ca_file=settings.schema_registry_ca_file,
    )
