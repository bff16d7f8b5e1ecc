"""The one typed settings object: config/settings.toml, overridden by PURCHASE_STREAM_* env vars.

Read once (``load_settings()``) at the edge (CLI, worker start) and passed down; no module
calls ``os.getenv`` on its own. Business rules (chains, windows) come from
config/pipeline.toml as :class:`topologies.rules.Rules`.

Built on pydantic-settings so that settings fail closed (issue 17): every value is validated
(``PURCHASE_STREAM_BULK_RESTORE=ture`` is an error, not false), an unknown key in the file or
an unknown ``PURCHASE_STREAM_*`` variable is refused with its name, and secrets are
:class:`pydantic.SecretStr`, which prints as ``**********`` in ``repr``, logs and
``purchase-stream config``. Precedence: defaults < config/settings.toml < secret files
(``$PURCHASE_STREAM_SECRETS_DIR``) < environment < explicit overrides (CLI flags).
"""

from __future__ import annotations

import contextvars
import os
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from topologies.rules import Rules

ENV_PREFIX = "PURCHASE_STREAM_"
REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get(ENV_PREFIX + "CONFIG_DIR", REPO_ROOT / "config"))
# HS256 needs a key of at least 32 bytes (RFC 7518 section 3.2); stream/serve/auth.py checks
# the same.
MIN_SECRET_BYTES = 32

# PURCHASE_STREAM_* variables that are not settings: where the settings come from, and the
# switches of the test and benchmark harnesses. Any other PURCHASE_STREAM_* variable that names
# no setting is a typo and refused at start (a mistyped BROKR must not silently fall back).
NON_SETTING_VARIABLES = frozenset(
    ENV_PREFIX + name
    for name in (
        "CONFIG_DIR",  # this module: where settings.toml and pipeline.toml are
        "SECRETS_DIR",  # this module: a directory of secret files (Docker/Kubernetes secrets)
        "AVRO_DIR",  # stream/serde/schemas.py: the Avro schema directory
        "REQUIRE_BROKER",  # tests: integration tests fail instead of skipping
        "CHAOS",  # tests: chaos suite scale
        "OVERVIEW_PNG",  # tests: render the dashboard picture of docs/architecture.md
        "OVERVIEW_SECONDS",
        "SCREENSHOT",  # tests: live page screenshot
    )
)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class SettingsError(ValueError):
    """A setting is missing or has the wrong type; the message names the setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",  # an unknown key in settings.toml (or an override) is an error
        frozen=True,
        validate_default=True,
        hide_input_in_errors=True,  # a refused secret must not be echoed in the error
    )

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
    # Static consumer-group membership (stream/engine/membership.py): a worker restarted after a
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
    # HS256 key (>= 32 bytes) that verifies the API's bearer JWTs (stream/serve/auth.py). Empty =
    # the /v1 data endpoints answer 503: they serve personal data.
    api_jwt_secret: SecretStr = SecretStr("")
    # A worker that holds no partition while its group has lag and commits nothing, or
    # whose partitions have lag and commit nothing, for this long is stalled: /healthz 503,
    # purchase_stream_stalled, alert PurchaseStreamWorkerStalled (stream/engine/liveness.py).
    stall_after_s: float = 120.0
    # A partition this worker holds that had lag all through the last this-many seconds and
    # committed (almost) nothing in them, while the worker is not restoring, rebalancing or
    # waiting for the schema registry, stops the worker (exit 71) for its supervisor to
    # restart it (stream/engine/liveness.py CrawlWatch, a sliding window). 0 = never.
    restart_stuck_after_s: float = 25.0
    # How often the worker runs each stage's time-driven work (retention purge, parking
    # expiry, Bonus month close) on the partitions it owns.
    tick_interval_s: float = 60.0
    # Restore the tables from their changelogs with librdkafka before Faust starts
    # (stream/engine/restore.py); off = Faust's own, per-record recovery only. Databases not
    # known to be in sync with their changelogs are deleted and restored from the start
    # (docs/architecture.md).
    bulk_restore: bool = True
    # asyncio event loop of the worker: "uvloop" (libuv) or "asyncio" (the standard one).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Send what a worker batch's receipts send to one partition of receipts.identified or
    # aggregates.contributions as one record, a pack (stream/engine/packing.py); off = one
    # record each, the design before packing. The reader takes both, so it may change
    # between restarts; `make bench` measures one against the other (BENCHMARKS.md, "Design
    # changes").
    pack_internal_topics: bool = True

    # -- how every Kafka client connects (stream/kafka_config.py builds the client configs) --
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    # PEM files: the CA that signed the brokers' certificates ("" = the system's CAs), and the
    # client certificate and key for mutual TLS.
    kafka_ssl_ca_file: str = ""
    kafka_ssl_cert_file: str = ""
    kafka_ssl_key_file: str = ""
    kafka_ssl_key_password: SecretStr = SecretStr("")

    # -- how the Schema Registry client connects (http(s) URLs only) --
    # Basic auth; credentials in the URL's user info are moved here (so the URL never
    # carries a secret into a log).
    schema_registry_username: str = ""
    schema_registry_password: SecretStr = SecretStr("")
    schema_registry_ca_file: str = ""  # PEM CA for an https:// registry ("" = system CAs)

    def with_overrides(self, **kwargs: Any) -> Settings:
        values = self.model_dump()
        values.update({k: v for k, v in kwargs.items() if v is not None})
        return _validate(lambda: type(self).model_validate(values))

    @field_validator("api_jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and len(raw.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes (HS256 key) or empty")
        return value

    @field_validator("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file")
    @classmethod
    def _file_exists(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("schema_registry_ca_file")
    @classmethod
    def _registry_ca_exists(cls, value: str) -> str:
        return cls._file_exists(value)

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"kafka_security_protocol {protocol} needs kafka_sasl_username and "
                "kafka_sasl_password"
            )
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise ValueError("kafka_ssl_cert_file and kafka_ssl_key_file go together")
        tls_files = self.kafka_ssl_ca_file or self.kafka_ssl_cert_file
        if tls_files and not protocol.endswith("SSL"):
            raise ValueError(
                f"kafka_ssl_* files are set but kafka_security_protocol is {protocol} "
                "(SSL or SASL_SSL uses them)"
            )
        url = urllib.parse.urlsplit(self.schema_registry_url)
        if url.username is not None or url.password is not None:
            if self.schema_registry_username:
                raise ValueError(
                    "schema_registry_url has user info and schema_registry_username is set; "
                    "give the credentials once"
                )
            # Frozen model: object.__setattr__ is pydantic's documented way for an "after"
            # validator of a frozen model to normalise its own fields.
            host = url.hostname or ""
            netloc = f"{host}:{url.port}" if url.port else host
            object.__setattr__(
                self, "schema_registry_url", urllib.parse.urlunsplit(url._replace(netloc=netloc))
            )
            object.__setattr__(
                self, "schema_registry_username", urllib.parse.unquote(url.username or "")
            )
            object.__setattr__(
                self,
                "schema_registry_password",
                SecretStr(urllib.parse.unquote(url.password or "")),
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest priority first: flags, environment, secret files, settings.toml."""
        toml_path, env = _SOURCES.get()
        env_source: PydanticBaseSettingsSource = (
            env_settings if env is None else _MappingEnvSource(settings_cls, env)
        )
        return (
            init_settings,
            env_source,
            file_secret_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )

    def public_dict(self) -> dict[str, Any]:
        """Every setting as JSON-ready values, secrets masked (``purchase-stream config``)."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                out[name] = "**********" if value.get_secret_value() else ""
            else:
                out[name] = value
        return out


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' own environment source, reading a given mapping, not os.environ.

    ``load_settings(env=...)`` lets tests and the demo pass an environment without mutating
    the process's. ``_load_env_vars`` is the source's one hook that reads ``os.environ``; the
    rest (prefix, case, parsing) stays the library's. tests/unit/test_settings.py checks this,
    and that the private hook, its signature and ``parse_env_vars``' import path are as used
    here (pydantic-settings is pinned exactly in pyproject.toml for them).
    """

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = dict(env)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


# (settings.toml path, environment mapping or None for os.environ) of the load in progress:
# pydantic-settings builds the sources in a classmethod, so load_settings passes them here.
_SOURCES: contextvars.ContextVar[tuple[Path, Mapping[str, str] | None]] = contextvars.ContextVar(
    "settings_sources", default=(CONFIG_DIR / "settings.toml", None)
)


def _unknown_variables(env: Mapping[str, str]) -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(
        name
        for name in env
        if name.upper().startswith(ENV_PREFIX)
        and name.upper() not in known
        and name.upper() not in NON_SETTING_VARIABLES
    )


def _one_line(exc: ValidationError, path: Path) -> str:
    """A readable message naming every bad setting and where to set it; never the value."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        name = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown setting {name!r} (in {path} or an override)")
        elif name:
            parts.append(f"setting {name} ({ENV_PREFIX}{name.upper()}): {msg}")
        else:
            parts.append(msg)
    return "bad settings: " + "; ".join(parts)


def _validate(build: Callable[[], Settings], path: Path = CONFIG_DIR / "settings.toml") -> Settings:
    try:
        return build()
    except ValidationError as exc:
        raise SettingsError(_one_line(exc, path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"bad settings: {path} is not valid TOML: {exc}") from None


def load_settings(
    path: Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Defaults < config/settings.toml < secret files < environment < overrides (CLI flags).

    Raises :class:`SettingsError` (one line, naming the setting, never its value) for an
    unknown ``PURCHASE_STREAM_*`` variable, an unknown key, or a value of the wrong type.
    """
    path = path or CONFIG_DIR / "settings.toml"
    seen = os.environ if env is None else env
    unknown = _unknown_variables(seen)
    if unknown:
        raise SettingsError(
            f"unknown setting variable(s): {', '.join(unknown)} (no such setting; "
            "`purchase-stream config` lists them)"
        )
    secrets_dir = seen.get(ENV_PREFIX + "SECRETS_DIR") or None
    if secrets_dir and not Path(secrets_dir).is_dir():
        raise SettingsError(f"bad settings: {ENV_PREFIX}SECRETS_DIR {secrets_dir} is no directory")
    token = _SOURCES.set((path, env))
    try:
        flags = {k: v for k, v in overrides.items() if v is not None}
        # _secrets_dir: pydantic-settings' documented init argument (not a field).
        return _validate(lambda: Settings(_secrets_dir=secrets_dir, **flags), path)  # type: ignore[call-arg]
    finally:
        _SOURCES.reset(token)


def load_rules(path: Path | None = None) -> Rules:
    path = path or CONFIG_DIR / "pipeline.toml"
    with path.open("rb") as f:
        return Rules.from_dict(tomllib.load(f))
