"""Deterministic POS event simulator: a realistic, reproducible stream of input events.

It generates what the four input topics carry (``product.catalog``, ``customer.cards``,
``customer.consents``, ``pos.receipts``) as plain event dicts, the same shape as one line of a
replay JSONL file::

    {"topic": str, "key": str | None, "value": dict | None, "timestamp": int}

``value`` is the record with its Avro field names (timestamps epoch millis, money integer
cents), ``None`` is a tombstone, ``timestamp`` is the broker timestamp (non-decreasing over the
stream). Everything is drawn from one ``random.Random(seed)``: the same :class:`SimConfig`
gives the same events, byte for byte, in any process.

The stream is deliberately not clean. Besides ordinary receipts it holds, in configurable
shares: anonymous receipts, returns naming an earlier receipt, exact re-deliveries, late
receipts, receipts that break the rules (:data:`BAD_KINDS`), receipts whose card is registered
only after the receipt (parking), receipts with a card that is never registered, consent changes
with a few older versions re-sent out of order, customers with no consent record (fail closed),
a person moving household, closed cards, erased customers and products missing from the
catalogue. What was injected is counted, with ids, in :class:`SimStats`, because none of it is
tagged inside the records themselves. Undecodable payloads cannot be dicts:
:func:`bad_bytes_events` gives raw ones for the producer (:func:`bad_bytes_replay_events` as
replay-file lines with ``value_b64``).

The data is synthetic: ids and card numbers are random, product names are generic and no
person's name appears anywhere.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson

from stream.simulator.changes import _Changes
from stream.simulator.config import (
    CARDS,
    CATALOG,
    CONSENTS,
    DEFAULT_START_MS,
    HOUR_MS,
    RECEIPTS,
    Event,
    SimConfig,
    SimStats,
)
from stream.simulator.receipts import _Receipts
from stream.simulator.world import _count

__all__ = [
    "bad_bytes_events",
    "bad_bytes_replay_events",
    "generate",
    "read_jsonl",
    "simulate",
    "write_jsonl",
]


class _Simulation(_Changes, _Receipts):
    """One run: the world, its changes and its receipts, in stream order."""

    def run(self) -> Iterator[Event]:
        cfg, rng, stats = self.cfg, self.rng, self.stats
        ts = cfg.start_ms - 2 * HOUR_MS
        for product in self.products:
            if product["gtin"] not in self.hidden_gtins:
                yield self._event(CATALOG, product["gtin"], product, ts)
        ts = cfg.start_ms - HOUR_MS
        for members in self.households.values():
            for person in members:
                for card in person.cards:
                    if card not in self.late_waiting:
                        yield self._event(CARDS, card, self._card_record(card, person, ts), ts)
                record = self.consent.get(person.customer_id)
                if record is not None:
                    yield self._event(CONSENTS, person.customer_id, dict(record), ts)

        n = cfg.receipts
        schedule: dict[int, list[str]] = {}
        for _ in range(_count(n, cfg.role_changes)):
            schedule.setdefault(self.card_rng.randrange(n), []).append("role")
        for action, count in (
            ("consent", _count(n, cfg.consent_changes)),
            ("move", _count(n, cfg.household_moves)),
            ("close", _count(n, cfg.card_closures)),
            ("erase", _count(n, cfg.erasures)),
        ):
            for _ in range(count):
                schedule.setdefault(rng.randrange(n), []).append(action)
                if action == "consent" and rng.random() < cfg.stale_consents:
                    # a gateway re-sends an old version later: put it in the second half so
                    # that customers with two versions exist by then
                    schedule.setdefault(rng.randrange(n // 2, n), []).append("stale")
        # Each late card is shown at a till at least once (it may be picked earlier, too).
        forced_cards = {rng.randrange(n): card for card in stats.late_cards} if n else {}

        t = float(cfg.start_ms)
        rate = cfg.receipts_per_second / 1000.0  # receipts per ms
        expovariate = rng.expovariate
        pending = self.pending
        for i in range(n):
            t += expovariate(rate)
            ts = int(t)
            while pending and pending[0][0] <= i:
                yield self._pending_event(ts)
            actions = schedule.pop(i, None)
            if actions:
                for action in actions:
                    events = self._change(action, ts)
                    if events is None:  # nothing to act on yet: try again at the next receipt
                        schedule.setdefault(i + 1, []).append(action)
                    else:
                        yield from events
            yield self._receipt(i, ts, forced_cards.get(i))
        ts = int(t)
        while pending:
            yield self._pending_event(ts)
        for card, waiting in self.late_waiting.items():
            if waiting:  # never shown at a till: registered at the end all the same
                self.late_waiting[card] = False
                record = self._card_record(card, self.card_owner[card], ts)
                yield self._event(CARDS, card, record, ts)
        for actions in schedule.values():  # retries that ran past the last receipt
            for action in actions:
                yield from self._change(action, ts) or ()


def generate(cfg: SimConfig | None = None, stats: SimStats | None = None) -> Iterator[Event]:
    """Yield the events of one simulated run, in stream order.

    Order: the catalogue, then the card register and consents of the population (late cards
    held back), then the receipt stream with consent changes, card changes, late cards and
    re-deliveries interleaved. ``timestamp`` is non-decreasing. Pass a :class:`SimStats` to
    learn what was injected; it is complete when the iterator is exhausted.
    """
    sim = _Simulation(cfg or SimConfig(), stats if stats is not None else SimStats())
    return sim.run()


def simulate(cfg: SimConfig | None = None) -> tuple[list[Event], SimStats]:
    """All events of a run as a list, with what was injected."""
    stats = SimStats()
    events = list(generate(cfg, stats))
    return events, stats


def write_jsonl(
    events: Iterable[Event],
    path: str | Path,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write one orjson line per event; returns the count. ``progress(n)`` every 10,000 events."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    chunk: list[bytes] = []
    dumps = orjson.dumps
    with path.open("wb") as f:
        for event in events:
            chunk.append(dumps(event))
            n += 1
            if len(chunk) == 10_000:
                f.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
                if progress is not None:
                    progress(n)
        if chunk:
            f.write(b"\n".join(chunk) + b"\n")
    if progress is not None:
        progress(n)
    return n


def read_jsonl(path: str | Path) -> Iterator[Event]:
    """The events of a JSONL file written by :func:`write_jsonl` (blank lines skipped)."""
    with Path(path).open("rb") as f:
        for line in f:
            if line.strip():
                yield orjson.loads(line)


def bad_bytes_events() -> list[tuple[str, bytes | None, bytes]]:
    """Raw payloads no codec can decode, as ``(topic, key, value)`` for the producer.

    A dict event cannot carry them (the producer encodes every dict), so they travel beside the
    stream: garbage, JSON where Avro is expected, a wrong magic byte, an unknown schema id
    (9999) and a payload shorter than the 5-byte Confluent header.
    """
    unknown_schema = b"\x00" + (9999).to_bytes(4, "big")
    return [
        (RECEIPTS, b"SM0001", b"\xde\xad\xbe\xef not a receipt \xff\xfe"),
        (RECEIPTS, b"SM0001", b'{"receipt_id": "SM0001-01-json", "total_cents": 100}'),
        (RECEIPTS, b"PR0001", b"\x01" + (1).to_bytes(4, "big") + b"\x02\x06abc"),
        (RECEIPTS, b"AL0001", unknown_schema + b"\x02\x06abc\x00"),
        (RECEIPTS, None, b"\x00\x00\x00"),
        (CARDS, b"7000000000000000", b"garbage card"),
        (CONSENTS, b"C000000000", unknown_schema + b"\x00"),
    ]


def bad_bytes_replay_events(timestamp: int = DEFAULT_START_MS) -> list[Event]:
    """:func:`bad_bytes_events` as replay-file events (raw value base64 in ``value_b64``)."""
    return [
        {
            "topic": topic,
            "key": None if key is None else key.decode(),
            "value_b64": base64.b64encode(value).decode("ascii"),
            "timestamp": timestamp,
        }
        for topic, key, value in bad_bytes_events()
    ]
