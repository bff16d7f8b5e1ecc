"""The project's Avro schemas: loaded once from ``avro/**/*.avsc`` and handed out parsed.

Each ``.avsc`` file defines one top-level record, ``avro/fi/coop/purchase/Receipt.avsc`` ->
``fi.coop.purchase.Receipt``. A file may refer by full name to a named type defined in another
file (``EReceipt`` embeds ``fi.coop.purchase.Receipt``); the loader resolves such references
across files, so a type is written down once.

Two forms of every schema are exposed:

- :func:`schema_text` -- the self-contained schema as compact JSON, every referenced type
  inlined at its first use, docs, defaults and ``logicalType`` kept. This is what is registered
  in the schema registry, so other consumers see real timestamps and documentation.
- :func:`schema` -- the parsed fastavro schema the codec reads and writes with, with every
  ``logicalType`` removed. Timestamps are therefore plain ``int`` UTC epoch milliseconds on both
  decode and encode: fastavro would otherwise build a timezone-aware ``datetime`` per timestamp
  on read (slow, and not the project's record contract) and run a conversion hook per
  timestamp on write. A ``timestamp-millis`` long is a long on the wire either way, so
  stripping the annotation changes no byte.

:func:`parse_plain` applies the same treatment to a schema text fetched from the registry (a
writer schema), so writer and reader schemas agree.

The directory is ``avro/`` next to the ``stream`` package, or ``$PURCHASE_STREAM_AVRO_DIR``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

AVRO_DIR_ENV = "PURCHASE_STREAM_AVRO_DIR"
PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})


class SchemaLoadError(ValueError):
    """An ``.avsc`` file is malformed, misplaced, or refers to an undefined type."""


def default_avro_dir() -> Path:
    env = os.environ.get(AVRO_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "avro"


def strip_logical_types(node: Any) -> Any:
    """A copy of a JSON schema (raw or parsed) without any ``logicalType`` annotation.

    ``{"type": "long", "logicalType": "timestamp-millis"}`` collapses to ``"long"``. The
    project uses no logical type other than timestamps, whose wire form is the bare long.
    """
    if isinstance(node, list):
        return [strip_logical_types(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if "logicalType" in node and set(out) == {"type"} and isinstance(out["type"], str):
        return out["type"]
    return out


def parse_plain(schema_text: str | dict[str, Any]) -> dict[str, Any]:
    """Parse a self-contained schema (e.g. a writer schema from the registry) for decoding.

    Logical types are stripped like :func:`schema`'s; names are resolved in a fresh namespace,
    so a writer schema never clashes with the project's own definitions.
    """
    raw = json.loads(schema_text) if isinstance(schema_text, str) else schema_text
    parsed = fastavro.parse_schema(strip_logical_types(raw), named_schemas={})
    if not isinstance(parsed, dict):
        raise SchemaLoadError("a registry schema must be a named record, not a union")
    return parsed


def _fullname(name: str, namespace: str) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _namespace_of(fullname: str) -> str:
    return fullname.rsplit(".", 1)[0] if "." in fullname else ""


def _collect(node: Any, namespace: str, out: dict[str, dict[str, Any]], origin: str) -> None:
    """Record every named type defined anywhere in ``node`` under its full name."""
    if isinstance(node, list):
        for n in node:
            _collect(n, namespace, out, origin)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind in _NAMED:
        name = node.get("name")
        if not isinstance(name, str):
            raise SchemaLoadError(f"{origin}: a {kind} without a name")
        full = _fullname(name, node.get("namespace", namespace))
        if full in out:
            raise SchemaLoadError(f"{origin}: {full} is defined more than once")
        # Store with the full name and without namespace: the definition then carries its own
        # namespace, wherever it ends up inlined.
        out[full] = {k: v for k, v in node.items() if k != "namespace"} | {"name": full}
        inner_ns = _namespace_of(full)
        for f in node.get("fields", []):
            _collect(f.get("type"), inner_ns, out, origin)
        return
    if kind == "array":
        _collect(node.get("items"), namespace, out, origin)
    elif kind == "map":
        _collect(node.get("values"), namespace, out, origin)
    elif isinstance(kind, dict | list):
        _collect(kind, namespace, out, origin)


def _inline(node: Any, namespace: str, catalog: dict[str, dict[str, Any]], done: set[str]) -> Any:
    """Expand ``node`` into a self-contained schema: each named type defined at first use.

    Later uses of an already defined type are emitted as its full name, which keeps the result
    valid Avro (fastavro's ``expand_schema`` repeats definitions, which is not).
    """
    if isinstance(node, list):
        return [_inline(n, namespace, catalog, done) for n in node]
    if isinstance(node, str):
        if node in PRIMITIVES:
            return node
        full = _fullname(node, namespace)
        if full in done:
            return full
        if full not in catalog:
            raise SchemaLoadError(f"unknown type {full!r}")
        return _inline(catalog[full], namespace, catalog, done)
    if not isinstance(node, dict):
        raise SchemaLoadError(f"not a schema: {node!r}")
    kind = node.get("type")
    if kind in _NAMED:
        full = _fullname(node["name"], node.get("namespace", namespace))
        if full in done:
            return full
        done.add(full)
        out = {k: v for k, v in node.items() if k != "namespace"} | {"name": full}
        if "fields" in node:
            inner_ns = _namespace_of(full)
            out["fields"] = [
                f | {"type": _inline(f["type"], inner_ns, catalog, done)} for f in node["fields"]
            ]
        return out
    if kind == "array":
        return node | {"items": _inline(node["items"], namespace, catalog, done)}
    if kind == "map":
        return node | {"values": _inline(node["values"], namespace, catalog, done)}
    if isinstance(kind, dict | list) or (isinstance(kind, str) and kind not in PRIMITIVES):
        # {"type": <schema>} wrapper, e.g. {"type": "fi.coop.purchase.Receipt"}
        return _inline(kind, namespace, catalog, done)
    return dict(node)  # a primitive, possibly with a logicalType


@dataclass(frozen=True)
class SchemaSet:
    """All top-level schemas of one ``avro/`` directory, by full name."""

    texts: dict[str, str]
    parsed: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, avro_dir: Path) -> SchemaSet:
        files = sorted(avro_dir.rglob("*.avsc"))
        if not files:
            raise SchemaLoadError(f"no .avsc files under {avro_dir}")
        tops: dict[str, dict[str, Any]] = {}
        catalog: dict[str, dict[str, Any]] = {}
        for path in files:
            rel = path.relative_to(avro_dir)
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise SchemaLoadError(f"{rel}: not JSON: {exc}") from exc
            if not isinstance(raw, dict) or raw.get("type") != "record":
                raise SchemaLoadError(f"{rel}: the top level must be a record")
            full = _fullname(str(raw.get("name")), str(raw.get("namespace", "")))
            # The path is the name, so a schema is found by name without an index.
            expected = ".".join((*rel.parent.parts, rel.stem))
            if full != expected:
                raise SchemaLoadError(f"{rel}: defines {full}, expected {expected}")
            if not raw.get("doc"):
                raise SchemaLoadError(f"{rel}: a top-level schema needs a doc")
            _collect(raw, "", catalog, str(rel))
            tops[full] = raw
        texts: dict[str, str] = {}
        parsed: dict[str, dict[str, Any]] = {}
        for full in tops:
            try:
                expanded = _inline(catalog[full], "", catalog, set())
                text = json.dumps(expanded, ensure_ascii=False, separators=(",", ":"))
                # Parsing the expanded text on its own proves it is self-contained and valid
                # (defaults match their types, names resolve), at import time not first use.
                fastavro.parse_schema(json.loads(text), named_schemas={})
                parsed[full] = parse_plain(text)
            except SchemaLoadError as exc:
                raise SchemaLoadError(f"{full}: {exc}") from exc
            except Exception as exc:  # fastavro raises several types for a bad schema
                raise SchemaLoadError(f"{full}: invalid schema: {exc}") from exc
            texts[full] = text
        return cls(texts=texts, parsed=parsed)

    def names(self) -> list[str]:
        return sorted(self.texts)

    def schema(self, fullname: str) -> dict[str, Any]:
        try:
            return self.parsed[fullname]
        except KeyError:
            raise KeyError(f"unknown schema {fullname!r}; known: {self.names()}") from None

    def schema_text(self, fullname: str) -> str:
        try:
            return self.texts[fullname]
        except KeyError:
            raise KeyError(f"unknown schema {fullname!r}; known: {self.names()}") from None


@cache
def default_set() -> SchemaSet:
    """The schemas of :func:`default_avro_dir`, loaded on first use."""
    return SchemaSet.load(default_avro_dir())


def names() -> list[str]:
    """Full names of all top-level schemas, e.g. ``fi.coop.purchase.Receipt``."""
    return default_set().names()


def schema(fullname: str) -> dict[str, Any]:
    """The parsed schema for encoding/decoding: timestamps as plain ``int`` epoch millis."""
    return default_set().schema(fullname)


def schema_text(fullname: str) -> str:
    """The self-contained schema JSON (with docs and logical types) to register."""
    return default_set().schema_text(fullname)
