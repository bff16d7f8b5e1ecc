"""The business rules a topology needs, as plain data (loaded from config/pipeline.toml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

DAY_MS = 86_400_000
MINUTE_MS = 60_000


@dataclass(frozen=True)
class Rules:
    product_level_chains: frozenset[str]
    partner_chains: frozenset[str] = frozenset({"PARTNER"})
    park_window_ms: int = 30 * DAY_MS
    park_sweep_interval_ms: int = 60 * MINUTE_MS
    aggregate_dedupe_window_ms: int = 35 * DAY_MS
    zone: str = "Europe/Helsinki"
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tz", ZoneInfo(self.zone))

    def is_product_level(self, chain: str) -> bool:
        # Unknown chains are total-only: fail closed (DOMAIN.md §1).
        return chain in self.product_level_chains

    def local_date(self, epoch_ms: int) -> str:
        """Calendar date (YYYY-MM-DD) of an instant in the co-op's zone."""
        return datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone(self._tz).strftime(
            "%Y-%m-%d"
        )

    def local_month(self, epoch_ms: int) -> str:
        return self.local_date(epoch_ms)[:7]

    @classmethod
    def from_dict(cls, cfg: dict) -> Rules:
        chains = cfg.get("chains", {})
        parking = cfg.get("parking", {})
        aggregates = cfg.get("aggregates", {})
        return cls(
            product_level_chains=frozenset(chains.get("product_level", [])),
            partner_chains=frozenset(chains.get("partners", ["PARTNER"])),
            park_window_ms=int(parking.get("window_days", 30) * DAY_MS),
            park_sweep_interval_ms=int(parking.get("sweep_interval_minutes", 60) * MINUTE_MS),
            aggregate_dedupe_window_ms=int(aggregates.get("dedupe_window_days", 35) * DAY_MS),
            zone=cfg.get("time", {}).get("zone", "Europe/Helsinki"),
        )
