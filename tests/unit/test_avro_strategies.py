"""The fuzzer's Avro strategy builder (tests/avro_strategies.py) draws only encodable values.

If it drew values the schema rejects, the fuzz tests would stop at the encoder and test
nothing behind it; if it missed the edges (int64 bounds, nulls, NaN, '|'), they would test
less than they claim.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from fastavro.validation import validate
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.local.topics import TOPICS
from stream.serde import schemas
from stream.serde.codec import Codec
from stream.serde.registry_store import InMemoryRegistry
from tests.avro_strategies import LONG_MAX, LONG_MIN, LONGS, for_record, from_schema

CODEC = Codec(InMemoryRegistry())
AVRO_TOPICS = sorted(name for name, spec in TOPICS.items() if spec.encoding == "avro")


@pytest.mark.parametrize("topic", AVRO_TOPICS)
@settings(max_examples=40)
@given(data=st.data())
def test_every_drawn_value_is_valid_and_round_trips(topic: str, data: st.DataObject) -> None:
    name = TOPICS[topic].schema
    assert name is not None
    value = data.draw(for_record(name, huge_arrays=50))
    assert validate(value, schemas.schema(name), raise_errors=True)
    decoded = CODEC.decode(topic, CODEC.encode(topic, value))
    assert _same(decoded, value)


def _same(a: Any, b: Any) -> bool:
    """Equality with NaN equal to itself (a double field may hold NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_overrides_replace_a_field_by_its_path() -> None:
    strategy = for_record(
        "fi.coop.purchase.Receipt",
        {"chain": st.just("PRISMA"), "lines.unit": st.just("KG")},
        huge_arrays=0,
    )

    @settings(max_examples=30)
    @given(strategy)
    def check(r: dict[str, Any]) -> None:
        assert r["chain"] == "PRISMA"
        assert all(line["unit"] == "KG" for line in r["lines"])

    check()


def test_the_edges_are_drawn() -> None:
    # hypothesis.find searches until an example matches (not a sample of fixed size that
    # may miss one by chance): each edge must be reachable by the strategies.
    from hypothesis import find

    quick = settings(max_examples=5_000, database=None, derandomize=True)
    for edge in (LONG_MIN, LONG_MAX, 0):
        assert find(LONGS, lambda n, e=edge: n == e, settings=quick) == edge
    texts = from_schema(["null", "string"])
    assert find(texts, lambda s: s is None, settings=quick) is None
    assert find(texts, lambda s: s == "", settings=quick) == ""
    assert "|" in find(texts, lambda s: s is not None and "|" in s, settings=quick)
