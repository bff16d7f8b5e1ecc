"""Receipts in the stream: ordinary, anonymous and total-only ones, returns, late receipts,
re-deliveries and receipts that break the rules."""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import orjson

from stream.simulator.config import (
    _PAY_ANONYMOUS,
    _PAY_CARD,
    CARDS,
    DAY_MS,
    HOUR_MS,
    PAYMENT_METHODS,
    RECEIPTS,
    Event,
)
from stream.simulator.world import _pick, _World


class _Receipts(_World):
    """Receipts of every kind, returns and the rule-breaking ones of a run."""

    def _receipt_id(self, store_id: str) -> str:
        self.receipt_no += 1
        n = self.receipt_no
        return f"{store_id}-{1 + n % 8:02d}-{n:08d}"

    def _lines(self, basket: str, n: int, gift: bool) -> tuple[list[dict[str, Any]], int, int]:
        pool, cum = self.baskets[basket]
        rnd = self.rng.random
        lines: list[dict[str, Any]] = []
        total = eligible_total = 0
        top, last = cum[-1], len(cum) - 1
        skus = [pool[bisect_right(cum, rnd() * top, 0, last)] for _ in range(n)]
        for no, (gtin, weighed, price, bonus, lo, hi) in enumerate(skus, 1):
            if weighed:
                qm = lo + int((hi - lo) * rnd())
                amount = (price * qm + 500) // 1000 or 1
                unit = "KG"
            else:
                r = rnd()
                q = 1 if r < 0.78 else 2 if r < 0.92 else 3 if r < 0.97 else 4 + int(3 * rnd())
                qm = q * 1000
                amount = price * q
                unit = "PCS"
            eligible = bonus and not gift
            lines.append({
                "line_no": no,
                "gtin": gtin,
                "unit": unit,
                "quantity_milli": qm,
                "amount_cents": amount,
                "bonus_eligible": eligible,
            })  # fmt: skip
            total += amount
            if eligible:
                eligible_total += amount
        return lines, total, eligible_total

    def _receipt(self, i: int, ts: int, forced_card: str | None) -> Event:
        cfg, rng, stats = self.cfg, self.rng, self.stats
        rnd = rng.random
        r = rnd()
        if r < cfg.returns and self.returnable and forced_card is None:
            return self._return(i, ts)
        late = r < cfg.returns + cfg.late
        bad = not late and r < cfg.returns + cfg.late + cfg.bad

        unknown = False
        card: str | None
        if forced_card is not None:
            card = forced_card
        elif rnd() < cfg.anonymous or not self.open_cards:
            card = None
        elif rnd() < cfg.unknown_cards:
            card = rng.choice(self.unknown_cards)
            unknown = True
        else:  # skewed: cards early in the pool shop more often
            cards = self.open_cards
            card = cards[int(len(cards) * rnd() ** 1.2)]
        if bad:
            store_id, chain = _pick(self.pl_stores, self.pl_store_cum, rnd())
        else:
            store_id, chain = _pick(self.stores, self.store_cum, rnd())
        if card is None:
            pay = _pick(PAYMENT_METHODS, _PAY_ANONYMOUS, rnd())
        else:
            pay = _pick(PAYMENT_METHODS, _PAY_CARD, rnd())
        gift = pay == "GIFT_CARD"
        if late:  # till offline or batch upload: hours, sometimes days late
            back = rng.randrange(HOUR_MS, 12 * HOUR_MS if rnd() < 0.6 else 4 * DAY_MS)
            purchased_at = ts - back
        else:
            purchased_at = ts - rng.randrange(80, 900)
        rid = self._receipt_id(store_id)

        if chain.basket:
            n = int(rng.lognormvariate(self.mu[chain.name], 0.7) + 0.5)
            n = 1 if n < 1 else 40 if n > 40 else n
            lines, total, eligible = self._lines(chain.basket, n, gift)
        else:
            stats.total_only += 1
            if rnd() < cfg.total_only_with_lines:
                stats.total_only_with_lines += 1
                lines, total, eligible = self._lines("restaurant", rng.randint(1, 6), gift)
            else:
                lines = []
                total = max(100, int(rng.lognormvariate(self.mu[chain.name], 0.6)))
                # the till computes the eligible part itself (e.g. drinks with alcohol are not)
                share = 1.0 if rnd() < 0.7 else rng.uniform(0.5, 0.95)
                eligible = 0 if gift else int(total * share)
        record = {
            "receipt_id": rid,
            "store_id": store_id,
            "chain": chain.name,
            "card_number": card,
            "purchased_at": purchased_at,
            "total_cents": total,
            "bonus_eligible_cents": eligible,
            "payment_method": pay,
            "original_receipt_id": None,
            "lines": lines,
        }
        key = store_id if card is None else card
        stats.receipts += 1
        if card is None:
            stats.anonymous += 1
        elif unknown:
            stats.unknown_card_receipts.append(rid)
        if late:
            stats.late.append(rid)
        if bad:
            self._break(record)
        elif chain.basket:
            self._keep_returnable(key, record)
        if card is not None and self.late_waiting.get(card):
            # the card register catches up a little later: the receipt has to wait (parking)
            self.late_waiting[card] = False
            stats.late_card_first_receipt[card] = rid
            person = self.card_owner[card]
            self._queue(i + rng.randint(1, 200), CARDS, card, self._card_record(card, person))
        if rnd() < cfg.duplicates:
            # the gateway did not get an ack and sends the same receipt again
            delay = rng.randint(1, 300) if rnd() < 0.9 else rng.randint(300, 20_000)
            self._queue(i + delay, RECEIPTS, key, orjson.dumps(record))
        return self._event(RECEIPTS, key, record, ts)

    def _keep_returnable(self, key: str, record: dict[str, Any]) -> None:
        buf = self.returnable
        if len(buf) < 500:
            buf.append((key, orjson.dumps(record)))
        elif self.rng.random() < 0.1:
            entry = (key, orjson.dumps(record))
            if len(buf) < 5000:
                buf.append(entry)
            else:
                buf[self.rng.randrange(5000)] = entry

    def _return(self, i: int, ts: int) -> Event:
        rng, buf = self.rng, self.returnable
        j = rng.randrange(len(buf))
        key, snapshot = buf[j]
        original = orjson.loads(snapshot)
        buf[j] = buf[-1]
        buf.pop()
        old_lines = original["lines"]
        k = 1 if rng.random() < 0.6 else rng.randint(1, len(old_lines))
        picked = sorted(rng.sample(range(len(old_lines)), k))
        lines = []
        for no, x in enumerate(picked, 1):
            line = old_lines[x]
            lines.append({
                **line,
                "line_no": no,
                "quantity_milli": -line["quantity_milli"],
                "amount_cents": -line["amount_cents"],
            })  # fmt: skip
        rid = self._receipt_id(original["store_id"])
        record = {
            "receipt_id": rid,
            "store_id": original["store_id"],
            "chain": original["chain"],
            "card_number": original["card_number"],
            "purchased_at": ts - rng.randrange(80, 900),
            "total_cents": sum(line["amount_cents"] for line in lines),
            "bonus_eligible_cents": sum(
                line["amount_cents"] for line in lines if line["bonus_eligible"]
            ),
            "payment_method": original["payment_method"],
            "original_receipt_id": original["receipt_id"],
            "lines": lines,
        }
        self.stats.receipts += 1
        if record["card_number"] is None:
            self.stats.anonymous += 1
        self.stats.returns.append(rid)
        if rng.random() < self.cfg.duplicates:
            self._queue(i + rng.randint(1, 300), RECEIPTS, key, orjson.dumps(record))
        return self._event(RECEIPTS, key, record, ts)

    def _break(self, record: dict[str, Any]) -> None:
        rng = self.rng
        kind = rng.choice(self.cfg.bad_kinds)
        lines = record["lines"]
        if kind == "total_mismatch":
            record["total_cents"] += rng.randint(1, 500)
        elif kind == "eligible_mismatch":
            record["bonus_eligible_cents"] = record["total_cents"] + rng.randint(1, 500)
        elif kind == "negative_sale":
            for line in lines:
                line["quantity_milli"] = -line["quantity_milli"]
                line["amount_cents"] = -line["amount_cents"]
            record["total_cents"] = -record["total_cents"]
            record["bonus_eligible_cents"] = -record["bonus_eligible_cents"]
        else:  # bad_gtin
            line = lines[rng.randrange(len(lines))]
            gtin = line["gtin"]
            line["gtin"] = gtin[:12] + str((int(gtin[12]) + rng.randint(1, 9)) % 10)
        self.stats.bad[record["receipt_id"]] = kind
