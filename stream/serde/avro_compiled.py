"""Schema-specialised Avro encoders and decoders, generated as Python source from a schema.

fastavro (compiled) interprets the parsed schema for every record: per field it looks the type
up in dicts and dispatches on it, ~0.5 µs a field. A function written for one schema does only
the field's own work: on this project's records it encodes in about half of fastavro's time
and decodes in 60-90 % of it (benchmarks/results/2026-12-07-diary.md, section 7). ``compile_schema``
writes such functions for the subset of Avro the project's schemas use -- records, arrays,
``["null", T]`` unions, string, bytes, int, long, boolean, double -- and returns ``None`` for
anything else, in which case :class:`stream.serde.codec.Codec` keeps using fastavro. The codec also
keeps fastavro for schema resolution (a writer schema that differs from the reader's) and for error
messages.

Byte-for-byte the same as fastavro's ``schemaless_writer``; decoding gives the same values as
its ``schemaless_reader`` (tests/unit/test_avro_compiled.py compares both on every topic's
records and on edge cases). Where fastavro would silently truncate (a float in a long field)
these encoders raise, like its validator does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

# (record, bytes to start with: the wire-format header) -> bytes
Encoder = Callable[[Any, bytes], bytes]
# (data, start offset) -> (record, offset after it)
Decoder = Callable[[bytes, int], tuple[Any, int]]

PRIMITIVES = ("string", "bytes", "int", "long", "boolean", "double")
LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1
_pack_double = struct.Struct("<d").pack
_unpack_double = struct.Struct("<d").unpack_from


class Unsupported(Exception):
    """The schema uses Avro features this compiler does not handle (use fastavro)."""


class Truncated(EOFError):
    """The bytes end inside a value."""


# --- runtime helpers the generated code calls ---------------------------------------------


def _w_long(out: bytearray, n: int) -> None:
    if not LONG_MIN <= n <= LONG_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _w_int(out: bytearray, n: int) -> None:
    if not INT_MIN <= n <= INT_MAX:
        raise OverflowError(f"{n} does not fit an Avro int")
    _w_long(out, n)


def _w_bytes(out: bytearray, b: bytes) -> None:
    if not isinstance(b, bytes | bytearray | memoryview):
        raise TypeError(f"{type(b).__name__} is not bytes")
    _w_long(out, len(b))
    out += b


def _r_long(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        pos += 1
        b = data[pos]
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos + 1


def _r_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _r_long(data, pos)
    end = pos + n
    if n < 0 or end > len(data):
        raise Truncated(f"expected {n} bytes at offset {pos}, {len(data) - pos} left")
    return data[pos:end], end


def _r_str(data: bytes, pos: int) -> tuple[str, int]:
    n, pos = _r_long(data, pos)
    end = pos + n
    if n < 0 or end > len(data):
        raise Truncated(f"expected {n} bytes at offset {pos}, {len(data) - pos} left")
    return data[pos:end].decode(), end


def _bad_union_index(i: int) -> Exception:
    return ValueError(f"union index {i} out of range")


_MISSING = object()

_RUNTIME: dict[str, Any] = {
    "_MISSING": _MISSING,
    "_w_long": _w_long,
    "_w_int": _w_int,
    "_w_bytes": _w_bytes,
    "_pack_double": _pack_double,
    "_r_long": _r_long,
    "_r_bytes": _r_bytes,
    "_r_str": _r_str,
    "_unpack_double": _unpack_double,
    "_bad_union_index": _bad_union_index,
    "Truncated": Truncated,
}

# Each value's common case inline (a long in -64..63 is one byte; a string shorter than 64
# bytes has a one-byte length); the general case calls the helpers above.
_WRITE_PRIMITIVE = {
    "string": "{t} = {v}.encode()\n"
    "if len({t}) < 64:\n    out.append(len({t}) << 1)\nelse:\n    _w_long(out, len({t}))\n"
    "out += {t}",
    "bytes": "_w_bytes(out, {v})",
    "int": "if type({v}) is int and -64 <= {v} < 64:\n"
    "    out.append(({v} << 1) ^ ({v} >> 63))\nelse:\n    _w_int(out, {v})",
    "long": "if type({v}) is int and -64 <= {v} < 64:\n"
    "    out.append(({v} << 1) ^ ({v} >> 63))\n"
    "elif type({v}) is int and -0x8000000000000000 <= {v} <= 0x7FFFFFFFFFFFFFFF:\n"
    "    {t} = ({v} << 1) ^ ({v} >> 63)\n"
    "    while {t} > 0x7F:\n"
    "        out.append(({t} & 0x7F) | 0x80)\n"
    "        {t} >>= 7\n"
    "    out.append({t})\n"
    "else:\n    _w_long(out, {v})",
    "boolean": "out.append(1 if {v} else 0)",
    "double": "out += _pack_double(float({v}))",
}
# Read by a helper; the others are read inline (see _Gen.read).
_READ_PRIMITIVE = {"bytes": "_r_bytes"}


class _Gen:
    """Writes one encoder and one decoder function per named record of a schema."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.funcs: dict[str, str] = {}  # record full name -> suffix of its functions
        self.src: list[str] = []
        self.tmp = 0
        self.inlining: set[str] = set()  # records being read inline (recursion guard)

    def var(self, stem: str) -> str:
        self.tmp += 1
        return f"{stem}{self.tmp}"

    def resolve(self, t: Any) -> Any:
        if isinstance(t, dict) and t.get("type") in PRIMITIVES and set(t) <= {"type"}:
            return t["type"]
        if isinstance(t, str) and t not in PRIMITIVES and t != "null":
            if t not in self.named:
                raise Unsupported(f"unknown named type {t}")
            return self.named[t]
        return t

    def record(self, schema: dict[str, Any]) -> str:
        name = schema["name"]
        fn = self.funcs.get(name)
        if fn is not None:
            return fn
        fn = self.funcs[name] = f"r{len(self.funcs)}"
        enc = [f"def _enc_{fn}(out, d):"]
        dec = [f"def _dec_{fn}(data, pos):"]
        names = []
        for i, field in enumerate(schema["fields"]):
            ftype = self.resolve(field["type"])
            fname = field["name"]
            v = f"v{i}"
            nullable = isinstance(ftype, list) and "null" in ftype
            if "default" in field:
                enc.append(f"    {v} = d.get({fname!r}, {field['default']!r})")
            elif nullable:
                enc.append(f"    {v} = d.get({fname!r})")
            else:  # fastavro's error for a missing field without a default
                enc.append(f"    {v} = d.get({fname!r}, _MISSING)")
                enc.append(f"    if {v} is _MISSING:")
                enc.append(f"        raise ValueError('no value and no default for {fname}')")
            self.write(ftype, v, enc, 1)
            self.read(ftype, v, dec, 1)
            names.append((fname, v))
        if not schema["fields"]:
            enc.append("    pass")
        body = ", ".join(f"{n!r}: {v}" for n, v in names)
        dec.append(f"    return {{{body}}}, pos")
        self.src += enc + [""] + dec + [""]
        return fn

    def write(self, t: Any, v: str, out: list[str], depth: int) -> None:
        ind = "    " * depth
        t = self.resolve(t)
        if isinstance(t, str):
            if t not in _WRITE_PRIMITIVE:
                raise Unsupported(f"type {t}")
            code = _WRITE_PRIMITIVE[t].format(v=v, t=self.var("b"))
            out.extend(ind + line for line in code.split("\n"))
        elif isinstance(t, list):
            branches = [self.resolve(b) for b in t]
            if len(branches) != 2 or branches[0] != "null" or branches[1] == "null":
                raise Unsupported(f"union {t}")
            out.append(f"{ind}if {v} is None:")
            out.append(f"{ind}    out.append(0)")
            out.append(f"{ind}else:")
            out.append(f"{ind}    out.append(2)")  # zig-zag of branch index 1
            self.write(branches[1], v, out, depth + 1)
        elif isinstance(t, dict) and t.get("type") == "record":
            fn = self.record(t)
            out.append(f"{ind}_enc_{fn}(out, {v})")
        elif isinstance(t, dict) and t.get("type") == "array":
            item = self.var("x")
            out.append(f"{ind}if {v}:")
            out.append(f"{ind}    _w_long(out, len({v}))")
            out.append(f"{ind}    for {item} in {v}:")
            self.write(t["items"], item, out, depth + 2)
            out.append(f"{ind}out.append(0)")
        else:
            raise Unsupported(f"type {t!r}")

    def read(self, t: Any, v: str, out: list[str], depth: int) -> None:
        ind = "    " * depth
        t = self.resolve(t)
        if isinstance(t, str):
            if t not in PRIMITIVES:
                raise Unsupported(f"type {t}")
            if t in ("int", "long"):
                b = self.var("b")
                out.append(f"{ind}{v} = data[pos]")
                out.append(f"{ind}if {v} < 0x80:")
                out.append(f"{ind}    {v} = ({v} >> 1) ^ -({v} & 1)")
                out.append(f"{ind}    pos += 1")
                out.append(f"{ind}elif data[pos + 1] < 0x80:")  # two bytes: up to +-8191
                out.append(f"{ind}    {b} = ({v} & 0x7F) | (data[pos + 1] << 7)")
                out.append(f"{ind}    {v} = ({b} >> 1) ^ -({b} & 1)")
                out.append(f"{ind}    pos += 2")
                out.append(f"{ind}else:")
                out.append(f"{ind}    {v}, pos = _r_long(data, pos)")
            elif t == "double":
                out.append(f"{ind}({v},) = _unpack_double(data, pos)")
                out.append(f"{ind}pos += 8")
            elif t == "boolean":
                out.append(f"{ind}{v} = data[pos] != 0")
                out.append(f"{ind}pos += 1")
            elif t == "string":
                n = self.var("n")
                out.append(f"{ind}{n} = data[pos]")
                out.append(f"{ind}if {n} < 0x80 and not {n} & 1:")
                out.append(f"{ind}    pos += 1")
                out.append(f"{ind}    {n} = pos + ({n} >> 1)")
                out.append(f"{ind}    if {n} > len(data):")
                out.append(f"{ind}        raise Truncated('a string runs past the end')")
                out.append(f"{ind}    {v} = data[pos:{n}].decode()")
                out.append(f"{ind}    pos = {n}")
                out.append(f"{ind}else:")
                out.append(f"{ind}    {v}, pos = _r_str(data, pos)")
            else:
                out.append(f"{ind}{v}, pos = {_READ_PRIMITIVE[t]}(data, pos)")
        elif isinstance(t, list):
            branches = [self.resolve(b) for b in t]
            if len(branches) != 2 or branches[0] != "null" or branches[1] == "null":
                raise Unsupported(f"union {t}")
            idx = self.var("u")
            out.append(f"{ind}{idx}, pos = _r_long(data, pos)")
            out.append(f"{ind}if {idx} == 0:")
            out.append(f"{ind}    {v} = None")
            out.append(f"{ind}elif {idx} == 1:")
            self.read(branches[1], v, out, depth + 1)
            out.append(f"{ind}else:")
            out.append(f"{ind}    raise _bad_union_index({idx})")
        elif isinstance(t, dict) and t.get("type") == "record":
            if t["name"] in self.inlining:  # recursive: call its function
                fn = self.record(t)
                out.append(f"{ind}{v}, pos = _dec_{fn}(data, pos)")
                return
            # Inline: no call and no (record, pos) tuple per nested record.
            self.inlining.add(t["name"])
            names = []
            for field in t["fields"]:
                fv = self.var("f")
                self.read(field["type"], fv, out, depth)
                names.append((field["name"], fv))
            self.inlining.discard(t["name"])
            body = ", ".join(f"{n!r}: {fv}" for n, fv in names)
            out.append(f"{ind}{v} = {{{body}}}")
        elif isinstance(t, dict) and t.get("type") == "array":
            n, item = self.var("n"), self.var("x")
            out.append(f"{ind}{v} = []")
            out.append(f"{ind}{n}, pos = _r_long(data, pos)")
            out.append(f"{ind}while {n}:")
            out.append(f"{ind}    if {n} < 0:")  # a block with its size in bytes: skip the size
            out.append(f"{ind}        {n} = -{n}")
            out.append(f"{ind}        _, pos = _r_long(data, pos)")
            out.append(f"{ind}    for _ in range({n}):")
            self.read(t["items"], item, out, depth + 2)
            out.append(f"{ind}        {v}.append({item})")
            out.append(f"{ind}    {n}, pos = _r_long(data, pos)")
        else:
            raise Unsupported(f"type {t!r}")


def compile_schema(parsed: dict[str, Any]) -> tuple[Encoder, Decoder] | None:
    """Encoder and decoder for a parsed record schema, or ``None`` if it is not supported.

    ``parsed`` is a fastavro-parsed schema (``stream.serde.schemas.schema``): named types are
    full names, logical types stripped.
    """
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    gen = _Gen(dict(parsed.get("__named_schemas") or {}))
    try:
        top = gen.record(parsed)
    except Unsupported:
        return None
    src = "\n".join(gen.src)
    src += (
        f"\ndef encode(d, header=b''):\n    out = bytearray(header)\n"
        f"    _enc_{top}(out, d)\n    return bytes(out)\n"
        f"\ndef decode(data, pos):\n    return _dec_{top}(data, pos)\n"
    )
    namespace = dict(_RUNTIME)
    exec(compile(src, f"<avro {parsed['name']}>", "exec"), namespace)  # noqa: S102 - generated
    return namespace["encode"], namespace["decode"]
