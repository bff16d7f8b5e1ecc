"""Hypothesis strategies built from the project's Avro schemas (``avro/**/*.avsc``).

No maintained Avro strategy library is installed (hypothesis ships JSON-schema and regex
strategies, not Avro), so this builds one from the parsed schema for the subset of Avro the
project's schemas use: records, arrays, ``["null", T]`` unions, string, bytes, int, long,
boolean, double. Every value it draws is one the Avro encoder accepts, so the fuzzer reaches
the topology code instead of stopping at the codec.

The values lean on the edges where bugs live: int and long bounds, 0 and -1, empty and long
strings, odd code points (never surrogates: Avro strings are UTF-8, which cannot carry them)
and the state-key separator ``|``, NaN and infinities, nulls in every union, and now and then
a huge array. ``overrides`` replaces the strategy of a field (by record field path, e.g.
``"lines.unit"``) so that callers can mix in plausible domain values and get past the
first rule check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from stream.serde import schemas

LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1

# Characters where text handling breaks: the state-key separator, the JSON and CSV
# specials, controls, combining marks, right-to-left text, a BOM, non-characters, astral
# planes and the last code point. No surrogates (U+D800-DFFF cannot be encoded in UTF-8).
ODD_CHARS = "|/\\\"'\x00\x01\x1f\x7f\u0300\u200b\u200e\u202e\ufeff\ufffe\uffff\U0001f600\U0010ffff"
_chars = st.one_of(
    st.sampled_from(ODD_CHARS),
    st.characters(codec="utf-8"),  # any encodable code point (excludes surrogates)
)


def strings(max_size: int = 40) -> st.SearchStrategy[str]:
    """Mostly short text from every plane and the odd characters; sometimes empty or long."""
    short = st.text(_chars, max_size=max_size)
    # Long: a repeated chunk (cheap to draw, still 2-50 KB on the wire).
    long = st.builds(
        lambda s, n: s * n, st.text(_chars, min_size=1, max_size=4), st.integers(500, 3_000)
    )
    return st.one_of(short, short, short, st.just(""), long)


def _bounded_ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from(sorted({lo, lo + 1, -1, 0, 1, hi - 1, hi})),
        st.integers(-1000, 1000),
        st.integers(lo, hi),
    )


LONGS = _bounded_ints(LONG_MIN, LONG_MAX)
INTS = _bounded_ints(INT_MIN, INT_MAX)
DOUBLES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, float("nan"), float("inf")]),
)

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "string": strings(),
    "bytes": st.binary(max_size=64),
    "int": INTS,
    "long": LONGS,
    "boolean": st.booleans(),
    "double": DOUBLES,
}


def _array(items: st.SearchStrategy[Any], huge: int) -> st.SearchStrategy[list[Any]]:
    small = st.lists(items, max_size=8)
    if huge <= 0:
        return small
    # A huge array: one drawn item repeated (drawing thousands of distinct items would make
    # every example slow); the domain fix-ups of the callers renumber what must be unique.
    big = st.builds(lambda x, n: [x] * n, items, st.integers(huge // 2, huge))
    return st.one_of(*[small] * 9, big)


def from_schema(
    schema: Any,
    overrides: Mapping[str, st.SearchStrategy[Any]] | None = None,
    *,
    huge_arrays: int = 0,
    _path: str = "",
    _named: Mapping[str, Any] | None = None,
) -> st.SearchStrategy[Any]:
    """A strategy of Avro-encodable values of a parsed schema (:func:`stream.serde.schemas.schema`).

    ``overrides`` maps a field path (``"card_number"``, ``"lines.gtin"``) to the strategy to
    use there instead; ``huge_arrays`` > 0 lets arrays be that long now and then.
    """
    overrides = overrides or {}
    named = dict(_named or {})
    if isinstance(schema, dict) and "__named_schemas" in schema:
        named.update(schema["__named_schemas"])
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        if schema == "null":
            return st.none()
        if schema in named:
            return from_schema(
                named[schema], overrides, huge_arrays=huge_arrays, _path=_path, _named=named
            )
        raise ValueError(f"unsupported Avro type {schema!r}")
    if isinstance(schema, list):
        return st.one_of(
            [
                from_schema(b, overrides, huge_arrays=huge_arrays, _path=_path, _named=named)
                for b in schema
            ]
        )
    kind = schema.get("type")
    if kind == "record":
        fields = {}
        prefix = _path if not _path or _path.endswith(".") else f"{_path}."
        for f in schema["fields"]:
            path = f"{prefix}{f['name']}"
            if path in overrides:
                fields[f["name"]] = overrides[path]
            else:
                fields[f["name"]] = from_schema(
                    f["type"], overrides, huge_arrays=huge_arrays, _path=path, _named=named
                )
        return st.fixed_dictionaries(fields)
    if kind == "array":
        items = from_schema(
            schema["items"], overrides, huge_arrays=huge_arrays, _path=f"{_path}.", _named=named
        )
        return _array(items, huge_arrays)
    if isinstance(kind, str | list | dict):
        return from_schema(kind, overrides, huge_arrays=huge_arrays, _path=_path, _named=named)
    raise ValueError(f"unsupported Avro schema {schema!r}")


def for_record(
    fullname: str,
    overrides: Mapping[str, st.SearchStrategy[Any]] | None = None,
    *,
    huge_arrays: int = 0,
) -> st.SearchStrategy[dict[str, Any]]:
    """Values of the project's record ``fullname``, e.g. ``fi.coop.purchase.Receipt``."""
    return from_schema(schemas.schema(fullname), overrides, huge_arrays=huge_arrays)
