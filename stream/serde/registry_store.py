"""The registry's model and its in-memory store.

:class:`SchemaRegistry` is the interface the codec needs (register a schema under a subject
and get its id; get a schema by id); the errors follow the Confluent REST API. The store,
:class:`InMemoryRegistry`, keeps ids in a dict, optionally persisted to a JSON file so ids
survive a restart (``replay``) and can be shared by processes on one machine (``file://``
URLs); the embedded server (:mod:`stream.local.registry_server`) serves one over HTTP.

Ids are global, as in Confluent's registry: the same schema gets the same id in every subject.
"Same" means the same JSON after parsing (key order and whitespace do not matter).

Compatibility is BACKWARD, Confluent's default: a new version of a subject must be able to
read data written with the latest version (added fields need defaults). The check is Apache
Avro's own (``avro.compatibility``, the Python port of the Java checker the Confluent registry
uses), not ours; a refused version answers 409 as Confluent's does.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import fastavro

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
        if self.path is None:
            return  # in memory only: nothing to load
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
        if self.path is None:
            return  # in memory only: nothing to save
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
