"""The business rules a topology needs, as plain data (loaded from config/pipeline.toml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

DAY_MS = 86_400_000
MINUTE_MS = 60_000
QUARTER_HOUR_MS = 15 * MINUTE_MS

# The common Bonus table (docs/domain.md §4): at least 50 € -> 1 %, ..., at least 900 € -> 5 %.
DEFAULT_BONUS_TIERS: tuple[tuple[int, int], ...] = (
    (5_000, 100),
    (20_000, 150),
    (30_000, 200),
    (40_000, 250),
    (50_000, 300),
    (60_000, 350),
    (70_000, 400),
    (80_000, 450),
    (90_000, 500),
)


# Stores with a retention period, and their defaults in days (docs/domain.md §7: purchase data
# and e-receipts 2 years from purchase, the recall index 1 year).
RETENTION_STORES: dict[str, int] = {
    "receipt_totals": 730,
    "personal_line_items": 730,
    "marketing_signals": 730,
    "ereceipts": 730,
    "counters": 730,
    "household_receipts": 730,
    "recall_index": 365,
}
DEFAULT_RETENTION: tuple[tuple[str, int], ...] = tuple(
    (store, days * DAY_MS) for store, days in RETENTION_STORES.items()
)


@dataclass(frozen=True)
class Rules:
    """The business rules, from ``config/pipeline.toml`` (:meth:`from_dict`)."""

    product_level_chains: frozenset[str]
    partner_chains: frozenset[str] = frozenset({"PARTNER"})
    park_window_ms: int = 30 * DAY_MS
    park_sweep_interval_ms: int = 60 * MINUTE_MS
    aggregate_dedupe_window_ms: int = 35 * DAY_MS
    zone: str = "Europe/Helsinki"
    # Household Bonus (docs/domain.md §4): (threshold cents, rate basis points), ascending.
    bonus_tiers: tuple[tuple[int, int], ...] = DEFAULT_BONUS_TIERS
    payment_benefit_bp: int = 50
    payment_benefit_method: str = "S_ETUKORTTI_PAYMENT"
    # A month closes on this day of the following month, 00:00 local time.
    bonus_close_day: int = 10
    bonus_dedupe_window_ms: int = 35 * DAY_MS
    bonus_sweep_interval_ms: int = 60 * MINUTE_MS
    # Retention per store (docs/domain.md §7): store name -> how long after the purchase its
    # records are kept. See RETENTION_STORES.
    retention_ms: tuple[tuple[str, int], ...] = DEFAULT_RETENTION
    retention_sweep_interval_ms: int = 60 * MINUTE_MS
    # Limits at the door (config [limits]): a receipt beyond them is dead-lettered before
    # anything is stored or counted.
    max_lines_per_receipt: int = 1_000
    # purchased_at may be at most this much older than the record's broker timestamp...
    max_lateness_ms: int = 30 * DAY_MS
    # ...and at most this much ahead of it (till clocks drift; a future purchase cannot be).
    max_clock_skew_ms: int = 15 * MINUTE_MS
    # The largest record (key + value bytes) a stage may send: under the broker's
    # max.message.bytes with room for the batch header. The worker lowers it at start to
    # what the broker allows (stream/engine/worker.py); a receipt whose identified record would be
    # larger is dead-lettered at the door, any other output by the runner.
    max_record_bytes: int = 1_000_000 - 4_096
    # How long a card's superseded links are kept (config [register]): at least the maximum
    # lateness of a receipt plus the parking window, so every receipt that passes the door
    # finds the link that held at its purchase time.
    card_history_retention_ms: int = 60 * DAY_MS
    # Lower limits of single topics, as the broker sets them: (topic, bytes).
    topic_record_bytes: tuple[tuple[str, int], ...] = ()
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)
    # 15-minute UTC bucket -> local date. Every UTC offset and transition of the zones in
    # use since 1970 falls on a quarter hour, so the local date is constant within a
    # bucket; the cache saves a datetime conversion and a strftime per call.
    _dates: dict[int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check the rules that depend on each other; set up the time-zone caches."""
        if self.card_history_retention_ms < self.max_lateness_ms + self.park_window_ms:
            raise ValueError(
                "register.history_retention_days must cover limits.max_lateness_days plus "
                "parking.window_days (a receipt must find the link of its purchase time)"
            )
        object.__setattr__(self, "_tz", ZoneInfo(self.zone))
        object.__setattr__(self, "_dates", {})

    def keep_ms(self, store: str) -> int:
        """How long ``store`` keeps a record after its purchase time (KeyError: no such store)."""
        for name, ms in self.retention_ms:
            if name == store:
                return ms
        raise KeyError(store)

    def record_limit(self, topic: str) -> int:
        """The largest record (key + value bytes) that may be sent to ``topic``."""
        for name, limit in self.topic_record_bytes:
            if name == topic:
                return min(limit, self.max_record_bytes)
        return self.max_record_bytes

    def is_product_level(self, chain: str) -> bool:
        """Whether ``chain`` reports line items (otherwise receipt totals only)."""
        # Unknown chains are total-only: fail closed (docs/domain.md §1).
        return chain in self.product_level_chains

    def local_date(self, epoch_ms: int) -> str:
        """Calendar date (YYYY-MM-DD) of an instant in the co-op's zone."""
        bucket = epoch_ms // QUARTER_HOUR_MS
        date = self._dates.get(bucket)
        if date is None:
            if len(self._dates) >= 100_000:  # ~3 years of quarter hours
                self._dates.clear()
            date = self._dates[bucket] = (
                datetime.fromtimestamp(bucket * QUARTER_HOUR_MS / 1000, UTC)
                .astimezone(self._tz)
                .strftime("%Y-%m-%d")
            )
        return date

    def local_month(self, epoch_ms: int) -> str:
        """Calendar month (YYYY-MM) of an instant in the co-op's zone."""
        return self.local_date(epoch_ms)[:7]

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> Rules:
        """The rules of a parsed ``pipeline.toml``; ValueError on an unknown or bad setting."""
        chains = cfg.get("chains", {})
        parking = cfg.get("parking", {})
        aggregates = cfg.get("aggregates", {})
        bonus = cfg.get("bonus", {})
        return cls(
            product_level_chains=frozenset(chains.get("product_level", [])),
            partner_chains=frozenset(chains.get("partners", ["PARTNER"])),
            park_window_ms=int(parking.get("window_days", 30) * DAY_MS),
            park_sweep_interval_ms=int(parking.get("sweep_interval_minutes", 60) * MINUTE_MS),
            aggregate_dedupe_window_ms=int(aggregates.get("dedupe_window_days", 35) * DAY_MS),
            zone=cfg.get("time", {}).get("zone", "Europe/Helsinki"),
            bonus_tiers=_bonus_tiers(bonus.get("tiers", DEFAULT_BONUS_TIERS)),
            payment_benefit_bp=_non_negative_int(
                "bonus.payment_benefit_bp", bonus.get("payment_benefit_bp", 50)
            ),
            payment_benefit_method=str(bonus.get("payment_benefit_method", "S_ETUKORTTI_PAYMENT")),
            bonus_close_day=_close_day(bonus.get("close_day", 10)),
            bonus_dedupe_window_ms=int(bonus.get("dedupe_window_days", 35) * DAY_MS),
            bonus_sweep_interval_ms=int(bonus.get("sweep_interval_minutes", 60) * MINUTE_MS),
            retention_ms=_retention(cfg.get("retention", {})),
            retention_sweep_interval_ms=int(
                cfg.get("retention", {}).get("sweep_interval_minutes", 60) * MINUTE_MS
            ),
            **_limits(cfg.get("limits", {})),
            **_register(cfg.get("register", {})),
        )


def _retention(cfg: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    known = {f"{store}_days" for store in RETENTION_STORES} | {"sweep_interval_minutes"}
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(f"unknown retention setting(s): {sorted(unknown)}; known: {sorted(known)}")
    out = []
    for store, default in RETENTION_STORES.items():
        days = cfg.get(f"{store}_days", default)
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ValueError(f"retention.{store}_days must be a positive integer, got {days!r}")
        out.append((store, days * DAY_MS))
    return tuple(out)


def _limits(cfg: dict[str, Any]) -> dict[str, Any]:
    known = {"max_lines_per_receipt", "max_lateness_days", "max_clock_skew_minutes"}
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(f"unknown limits setting(s): {sorted(unknown)}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    if "max_lines_per_receipt" in cfg:
        out["max_lines_per_receipt"] = _positive_int(
            "limits.max_lines_per_receipt", cfg["max_lines_per_receipt"]
        )
    if "max_lateness_days" in cfg:
        out["max_lateness_ms"] = (
            _positive_int("limits.max_lateness_days", cfg["max_lateness_days"]) * DAY_MS
        )
    if "max_clock_skew_minutes" in cfg:
        out["max_clock_skew_ms"] = (
            _non_negative_int("limits.max_clock_skew_minutes", cfg["max_clock_skew_minutes"])
            * MINUTE_MS
        )
    return out


def _register(cfg: dict[str, Any]) -> dict[str, Any]:
    unknown = set(cfg) - {"history_retention_days"}
    if unknown:
        raise ValueError(f"unknown register setting(s): {sorted(unknown)}")
    if "history_retention_days" not in cfg:
        return {}
    days = _positive_int("register.history_retention_days", cfg["history_retention_days"])
    return {"card_history_retention_ms": days * DAY_MS}


def _positive_int(name: str, value: object) -> int:
    number = _non_negative_int(name, value)
    if number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _bonus_tiers(raw: object) -> tuple[tuple[int, int], ...]:
    """``[[threshold_cents, rate_bp], ...]``, thresholds strictly ascending.

    Money is integer cents and rates integer basis points, so the Bonus is exact (docs/domain.md
    §4 rounding); a float here would be a configuration error, not something to round.
    """
    if not isinstance(raw, list | tuple) or not raw:
        raise ValueError("bonus.tiers must be a non-empty list of [threshold_cents, rate_bp]")
    tiers: list[tuple[int, int]] = []
    for pair in raw:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"bonus.tiers entry must be [threshold_cents, rate_bp], got {pair!r}")
        threshold = _non_negative_int("bonus.tiers threshold", pair[0])
        rate = _non_negative_int("bonus.tiers rate_bp", pair[1])
        if tiers and threshold <= tiers[-1][0]:
            raise ValueError("bonus.tiers thresholds must be strictly ascending")
        tiers.append((threshold, rate))
    return tuple(tiers)


def _close_day(value: object) -> int:
    # Day 29..31 does not exist in every month; the close must fall in every month.
    day = _non_negative_int("bonus.close_day", value)
    if not 1 <= day <= 28:
        raise ValueError(f"bonus.close_day must be 1..28, got {day}")
    return day
