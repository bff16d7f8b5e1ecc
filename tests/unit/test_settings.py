"""Settings fail closed (issue 17): strict values, unknown names refused, secrets never print."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream import cli
from stream.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-" + "x" * 40  # long enough for HS256
REG_PASSWORD = "reg-pa55word-that-must-not-print"
SASL_PASSWORD = "sasl-pa55word-that-must-not-print"


@pytest.fixture(autouse=True)
def plaintext_afterwards():
    # `cli.main` configures this process's Kafka security (stream/kafka_config.py): the
    # SASL_SSL settings of these tests must not reach the clients of later tests.
    yield
    from stream import kafka_config

    kafka_config.configure(load_settings(env={}))


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return path


def test_defaults_and_precedence_file_env_flags(tmp_path: Path) -> None:
    path = toml(tmp_path, 'partitions = 6\nbroker = "file:1"\nweb_port = 7001\n')
    env = {"PURCHASE_STREAM_PARTITIONS": "8", "PURCHASE_STREAM_BROKER": "env:2"}
    s = load_settings(path, env, broker="flag:3")
    assert (s.partitions, s.broker, s.web_port) == (8, "flag:3", 7001)
    assert s.app_id == "purchase-stream" and s.bulk_restore is True  # defaults
    # a flag left unset (None) does not override
    assert load_settings(path, env, broker=None).broker == "env:2"
    # the repository's own settings.toml loads as it did
    assert load_settings(env={}).broker == "127.0.0.1:19200"


def test_the_process_environment_is_read_when_no_mapping_is_given(monkeypatch) -> None:
    monkeypatch.setenv("PURCHASE_STREAM_WEB_PORT", "7123")
    assert load_settings().web_port == 7123


@pytest.mark.parametrize(
    ("raw", "value"), [("true", True), ("false", False), ("0", False), ("1", True), ("yes", True)]
)
def test_bools_accept_their_spellings(raw: str, value: bool) -> None:
    assert load_settings(env={"PURCHASE_STREAM_BULK_RESTORE": raw}).bulk_restore is value


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("BULK_RESTORE", "ture"),  # was silently false
        ("BULK_RESTORE", ""),
        ("PARTITIONS", "4.5"),
        ("PARTITIONS", "four"),
        ("WEB_PORT", ""),
        ("TICK_INTERVAL_S", "soon"),
        ("EVENT_LOOP", "trio"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("KAFKA_SASL_MECHANISM", "GSSAPI"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_setting(name: str, raw: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(env={f"PURCHASE_STREAM_{name}": raw})
    message = str(err.value)
    assert f"PURCHASE_STREAM_{name}" in message and "\n" not in message


def test_an_unknown_variable_is_refused_with_its_name() -> None:
    with pytest.raises(SettingsError, match="PURCHASE_STREAM_BROKR"):
        load_settings(env={"PURCHASE_STREAM_BROKR": "kafka:9092"})
    # the harness and bootstrap variables that are not settings are allowed
    load_settings(env={"PURCHASE_STREAM_REQUIRE_BROKER": "1", "PURCHASE_STREAM_AVRO_DIR": "x"})


def test_an_unknown_key_in_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="brokr"):
        load_settings(toml(tmp_path, 'brokr = "x"\n'), {})
    with pytest.raises(SettingsError, match="partitions"):
        load_settings(toml(tmp_path, 'partitions = "many"\n'), {})


def test_a_short_jwt_secret_is_refused_without_echoing_it() -> None:
    short = "short-but-secret"
    with pytest.raises(SettingsError) as err:
        load_settings(env={"PURCHASE_STREAM_API_JWT_SECRET": short})
    assert "32 bytes" in str(err.value) and short not in str(err.value)
    # empty stays allowed: the /v1 endpoints answer 503
    assert load_settings(env={}).api_jwt_secret.get_secret_value() == ""


def _secret_env(tmp_path: Path) -> dict[str, str]:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    return {
        "PURCHASE_STREAM_API_JWT_SECRET": SECRET,
        "PURCHASE_STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PURCHASE_STREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "PURCHASE_STREAM_KAFKA_SASL_USERNAME": "svc-stream",
        "PURCHASE_STREAM_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "PURCHASE_STREAM_KAFKA_SSL_CA_FILE": str(ca),
        "PURCHASE_STREAM_SCHEMA_REGISTRY_URL": f"https://svc:{REG_PASSWORD}@registry:8081",
    }


def test_secrets_never_print(tmp_path: Path, caplog) -> None:
    s = load_settings(env=_secret_env(tmp_path))
    assert s.api_jwt_secret.get_secret_value() == SECRET
    assert s.kafka_sasl_password.get_secret_value() == SASL_PASSWORD
    # the URL's user info became the credentials, and left the URL
    assert s.schema_registry_url == "https://registry:8081"
    assert s.schema_registry_username == "svc"
    assert s.schema_registry_password.get_secret_value() == REG_PASSWORD
    with caplog.at_level(logging.INFO):
        logging.getLogger("stream.test").info("settings: %s / %r", s, s)
    shown = [repr(s), str(s), s.model_dump_json(), json.dumps(s.public_dict()), caplog.text]
    for text in shown:
        for secret in (SECRET, SASL_PASSWORD, REG_PASSWORD):
            assert secret not in text
    assert s.public_dict()["api_jwt_secret"] == "**********"


def test_secrets_from_files(tmp_path: Path) -> None:
    # Docker/Kubernetes secrets: one file per setting in PURCHASE_STREAM_SECRETS_DIR
    (tmp_path / "purchase_stream_api_jwt_secret").write_text(SECRET)
    env = {"PURCHASE_STREAM_SECRETS_DIR": str(tmp_path)}
    assert load_settings(env=env).api_jwt_secret.get_secret_value() == SECRET
    # the environment still wins over a file
    other = "e" * 40
    env["PURCHASE_STREAM_API_JWT_SECRET"] = other
    assert load_settings(env=env).api_jwt_secret.get_secret_value() == other
    with pytest.raises(SettingsError, match="SECRETS_DIR"):
        load_settings(env={"PURCHASE_STREAM_SECRETS_DIR": str(tmp_path / "nope")})


def test_security_settings_must_be_coherent(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="kafka_sasl_username"):
        load_settings(env={"PURCHASE_STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(env={"PURCHASE_STREAM_KAFKA_SSL_CA_FILE": str(tmp_path / "none.pem")})
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    with pytest.raises(SettingsError, match="go together"):
        load_settings(
            env={
                "PURCHASE_STREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
                "PURCHASE_STREAM_KAFKA_SSL_CERT_FILE": str(pem),
            }
        )
    with pytest.raises(SettingsError, match="PLAINTEXT"):
        load_settings(env={"PURCHASE_STREAM_KAFKA_SSL_CA_FILE": str(pem)})


def test_with_overrides_validates() -> None:
    s = load_settings(env={})
    assert s.with_overrides(partitions=3, broker=None).partitions == 3
    with pytest.raises(SettingsError, match="partitions"):
        s.with_overrides(partitions="x")


# -- the CLI ------------------------------------------------------------------------------


def test_config_prints_effective_settings_with_secrets_masked(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    for name, value in _secret_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert cli.main(["config", "--partitions", "9"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert shown["partitions"] == 9  # the flag wins
    assert shown["kafka_sasl_mechanism"] == "SCRAM-SHA-512"
    assert shown["schema_registry_password"] == "**********"
    for secret in (SECRET, SASL_PASSWORD, REG_PASSWORD):
        assert secret not in out


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PURCHASE_STREAM_BULK_RESTORE": "ture"}, "PURCHASE_STREAM_BULK_RESTORE"),
        ({"PURCHASE_STREAM_BROKR": "kafka:9092"}, "PURCHASE_STREAM_BROKR"),
        ({"PURCHASE_STREAM_API_JWT_SECRET": "tooshort"}, "at least 32 bytes"),
    ],
)
def test_bad_settings_end_the_cli_with_exit_2_and_one_line(
    env: dict[str, str], expected: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASE_STREAM_")}
    for command in (["config"], ["worker"]):
        done = subprocess.run(
            [sys.executable, "-m", "stream.cli", *command],
            env={**clean, **env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
        assert "tooshort" not in done.stderr and done.stdout == ""


def test_every_variable_the_repository_sets_is_known() -> None:
    """A PURCHASE_STREAM_* name in the code, docs, compose or tests that is neither a setting
    nor a listed harness variable would stop every command at start (it is refused)."""
    import re

    from stream.settings import ENV_PREFIX, NON_SETTING_VARIABLES, Settings

    known = {ENV_PREFIX + n.upper() for n in Settings.model_fields} | NON_SETTING_VARIABLES
    found: dict[str, str] = {}
    files = [
        p
        for pattern in ("stream/*.py", "benchmarks/*.py", "tests/**/*.py", "config/*", "*.yml")
        for p in ROOT.glob(pattern)
        if p.is_file() and p.name != "test_settings.py"
    ]
    for path in [*files, ROOT / "README.md", ROOT / "Makefile", ROOT / "docs" / "runbook.md"]:
        for name in re.findall(r"PURCHASE_STREAM_[A-Z0-9_]*[A-Z0-9]", path.read_text()):
            found.setdefault(name, str(path.relative_to(ROOT)))
    typo_example = "PURCHASE_STREAM_BROKR"  # the README's example of a refused typo
    assert {n: w for n, w in found.items() if n not in known and n != typo_example} == {}


def test_the_pydantic_settings_internals_the_mapping_source_relies_on() -> None:
    """stream/settings.py's ``_MappingEnvSource`` overrides pydantic-settings' private
    ``EnvSettingsSource._load_env_vars`` and calls ``parse_env_vars`` from
    ``pydantic_settings.sources.utils``; pydantic-settings is pinned exactly in
    pyproject.toml. An upgrade that moves the helper, renames the hook, changes either's
    signature or stops reading the environment through the hook fails here first."""
    import importlib.metadata
    import inspect
    import re
    import tomllib

    from pydantic_settings import EnvSettingsSource
    from pydantic_settings.sources import utils

    from stream.settings import Settings, _MappingEnvSource

    # the installed version is the pinned one
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [d for d in deps if re.match(r"pydantic-settings\b", d)]
    assert pin == f"pydantic-settings=={importlib.metadata.version('pydantic-settings')}"
    # the hook: there, taking only self, and the one place the source reads os.environ
    hook = EnvSettingsSource._load_env_vars  # noqa: SLF001 - the private hook pinned here
    assert list(inspect.signature(hook).parameters) == ["self"]
    assert "parse_env_vars(os.environ," in inspect.getsource(hook)
    assert "self.env_vars = self._load_env_vars()" in inspect.getsource(EnvSettingsSource.__init__)
    # the helper, at the import path stream/settings.py uses, with the parameters it passes
    assert list(inspect.signature(utils.parse_env_vars).parameters) == [
        "env_vars",
        "case_sensitive",
        "ignore_empty",
        "parse_none_str",
    ]
    # and the override is what the source reads: the given mapping, not os.environ
    source = _MappingEnvSource(Settings, {"PURCHASE_STREAM_BROKER": "kafka:9092"})
    assert source.env_vars == {"purchase_stream_broker": "kafka:9092"}
