"""Schema registries: where Avro schema ids (the 4 bytes after the magic byte) come from.

The codec needs two operations -- register a schema under a subject and get its id, and get a
schema by id -- captured by :class:`SchemaRegistry`. Implementations:

- :class:`InMemoryRegistry` (:mod:`stream.serde.registry_store`): ids in a dict; optionally
  persisted to a JSON file so ids survive a restart (``replay``) and can be shared by
  processes on one machine (``file://`` URLs).
- :class:`ConfluentRegistryClient` (:mod:`stream.serde.registry_client`): confluent-kafka's
  ``SchemaRegistryClient`` (basic auth, TLS, retries, caches) behind our interface;
  production (Confluent Schema Registry, Karapace) and multi-process local runs.
- the embedded server for local runs and tests lives in :mod:`stream.local.registry_server`.

This module chooses one from a setting (:func:`registry_from_url`,
:func:`registry_from_settings`).
"""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any

from pydantic import SecretStr

from stream.serde.registry_client import ConfluentRegistryClient
from stream.serde.registry_store import (
    InMemoryRegistry,
    RegistryAccessError,
    RegistryError,
    SchemaRegistry,
)

__all__ = ["check_access", "registry_from_settings", "registry_from_url"]

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
