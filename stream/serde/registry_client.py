"""The production schema registry client: confluent-kafka's ``SchemaRegistryClient`` (basic
auth, TLS, retries, caches) behind our :class:`~stream.serde.registry_store.SchemaRegistry`
interface, for a Confluent Schema Registry or Karapace, and for multi-process local runs
against the embedded server (:mod:`stream.local.registry_server`)."""

from __future__ import annotations

import ssl
from http import HTTPStatus
from typing import Any

from pydantic import SecretStr

from stream.serde.registry_store import (
    INCOMPATIBLE_SCHEMA,
    INVALID_SCHEMA,
    IncompatibleSchemaError,
    InvalidSchemaError,
    RegisteredSchema,
    RegistryAccessError,
    RegistryError,
    RegistryUnavailableError,
    SchemaNotFoundError,
)


def client_httpx() -> Any:
    """The httpx module the registry client was built on: its network errors (refused, reset,
    timeout, TLS) escape the client after its retries.

    confluent-kafka >= 2.13 picks httpx or httpx2 in its own ``_httpx_compat`` module and asks
    callers to use that one; older ones (2.12, which the Quix peer's environment pins because
    quixstreams needs confluent-kafka < 2.13) import plain httpx. Tested both ways.
    """
    import importlib

    try:
        compat = importlib.import_module("confluent_kafka.schema_registry.common._httpx_compat")
    except ImportError:
        return importlib.import_module("httpx")
    return compat.httpx


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
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        httpx = client_httpx()

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


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):  # httpx wraps the ssl error's text
            return True
        seen = seen.__cause__ or seen.__context__
    return False
