"""The one typed settings object: config/settings.toml, overridden by PURCHASE_STREAM_* env vars.

Read once (``load_settings()``) at the edge (CLI, worker start) and passed down; no module
calls ``os.getenv`` on its own. Business rules (chains, windows) come from
config/pipeline.toml as :class:`topologies.rules.Rules`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from topologies.rules import Rules

ENV_PREFIX = "PURCHASE_STREAM_"
REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get(ENV_PREFIX + "CONFIG_DIR", REPO_ROOT / "config"))


class SettingsError(ValueError):
    """A setting is missing or has the wrong type; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    broker: str = "127.0.0.1:19200"
    schema_registry_url: str = "http://127.0.0.1:18081"
    state_dir: str = ".state/worker"
    partitions: int = 4
    replication_factor: int = 1
    app_id: str = "purchase-stream"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # How other workers reach this one (table-routed HTTP requests); "" = web_host:web_port.
    canonical_url: str = ""
    rocksdb_block_cache_bytes: int = 16 * 1024 * 1024
    broker_session_timeout_s: float = 10.0
    # Static consumer-group membership (stream/membership.py): a worker restarted after a
    # crash takes over its dead member. Off only for brokers whose static membership is
    # broken (tansu 0.6: a second static member never gets an assignment).
    static_membership: bool = True
    # This worker's group.instance.id: stable across its restarts, unique in the group.
    # "" = derived from the host name and state_dir.
    group_instance_id: str = ""
    stream_buffer_maxsize: int = 4096
    # Faust producer batch size in bytes; 1 only for brokers with batch defects (tansu).
    producer_max_batch_size: int = 16384
    embedded_data_dir: str = ".noida"
    # What the embedded broker of `demo` / `broker` keeps of most topics, seconds (stream/
    # topics.py, local retention); 0 = the registry's production settings.
    local_retention_s: float = 600.0
    log_level: str = "info"
    # HS256 key (>= 32 bytes) that verifies the API's bearer JWTs (stream/auth.py). Empty =
    # the /v1 data endpoints answer 503: they serve personal data.
    api_jwt_secret: str = ""
    # A worker that holds no partition while its group has lag and commits nothing, or
    # whose partitions have lag and commit nothing, for this long is stalled: /healthz 503,
    # purchase_stream_stalled, alert PurchaseStreamWorkerStalled (stream/liveness.py).
    stall_after_s: float = 120.0
    # A partition this worker holds that has lag and commits nothing for this long, while
    # the worker is not restoring, rebalancing or waiting for the schema registry, stops the
    # worker (exit 71) for its supervisor to restart it (stream/liveness.py). 0 = never.
    restart_stuck_after_s: float = 25.0
    # How often the worker runs each stage's time-driven work (retention purge, parking
    # expiry, Bonus month close) on the partitions it owns.
    tick_interval_s: float = 60.0
    # Restore the tables from their changelogs with librdkafka before Faust starts
    # (stream/restore.py); off = Faust's own, per-record recovery only. Databases not known
    # to be in sync with their changelogs are deleted and restored from the start (README).
    bulk_restore: bool = True
    # asyncio event loop of the worker: "uvloop" (libuv) or "asyncio" (the standard one).
    event_loop: str = "uvloop"

    def with_overrides(self, **kwargs: Any) -> Settings:
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


def _coerce(name: str, typ: Any, raw: Any) -> Any:
    typ_name = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if typ_name == "int":
            return int(raw)
        if typ_name == "float":
            return float(raw)
        if typ_name == "bool":
            if isinstance(raw, bool):
                return raw
            return str(raw).lower() in ("1", "true", "yes", "on")
        return str(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"setting {name!r} must be {typ_name}, got {raw!r}") from None


def load_settings(
    path: Path | None = None, env: dict[str, str] | None = None, **overrides: Any
) -> Settings:
    """Defaults < config/settings.toml < environment < explicit overrides (CLI flags)."""
    env = dict(os.environ) if env is None else env
    path = path or CONFIG_DIR / "settings.toml"
    file_values: dict[str, Any] = {}
    if path.exists():
        with path.open("rb") as f:
            file_values = tomllib.load(f)
    known = {f.name: f.type for f in fields(Settings)}
    unknown = set(file_values) - set(known)
    if unknown:
        raise SettingsError(f"unknown setting(s) in {path}: {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, typ in known.items():
        raw = file_values.get(name)
        env_raw = env.get(ENV_PREFIX + name.upper())
        if env_raw is not None:
            raw = env_raw
        if overrides.get(name) is not None:
            raw = overrides[name]
        if raw is not None:
            values[name] = _coerce(name, typ, raw)
    return Settings(**values)


def load_rules(path: Path | None = None) -> Rules:
    path = path or CONFIG_DIR / "pipeline.toml"
    with path.open("rb") as f:
        return Rules.from_dict(tomllib.load(f))
