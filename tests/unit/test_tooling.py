"""The project's tooling agrees with itself: pre-commit runs what `make check` runs, the
packages ship their type hints, and the record types of topologies/ follow the Avro schemas."""

from __future__ import annotations

import json
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from topologies import record_types as records

ROOT = Path(__file__).resolve().parents[2]
AVRO = ROOT / "avro"


def make_check_commands() -> list[str]:
    """The recipe lines of the Makefile's ``check`` target, with its variables expanded."""
    text = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^([A-Z_]+) [:?]?= (.*)$", text, re.MULTILINE))
    recipe = re.search(r"^check:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert recipe is not None, "no check target in the Makefile"
    commands = []
    for line in recipe.group(1).splitlines():
        command = line.strip()
        for _ in range(3):  # nested variables: BIN := $(VENV)/bin
            command = re.sub(r"\$\((\w+)\)", lambda m: variables[m.group(1)], command)
        commands.append(command)
    return commands


def test_pre_commit_runs_the_checks_of_make_check() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [h for repo in config["repos"] for h in repo["hooks"]]
    assert all(h["language"] == "system" and h["pass_filenames"] is False for h in hooks)
    assert [h["entry"] for h in hooks] == make_check_commands()


def test_both_packages_ship_their_type_hints() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    for package in ("stream", "topologies"):
        assert (ROOT / package / "py.typed").is_file()
        assert "py.typed" in package_data[package]


def avro_records() -> dict[str, dict[str, Any]]:
    """Every named record of ``avro/``, nested ones too, by its short name."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if node.get("type") == "record":
                found[node["name"]] = node
                for f in node["fields"]:
                    walk(f["type"])
            elif node.get("type") == "array":
                walk(node["items"])

    for path in sorted(AVRO.rglob("*.avsc")):
        walk(json.loads(path.read_text()))
    return found


AVRO_RECORDS = avro_records()


def test_every_avro_record_has_its_typed_dict() -> None:
    missing = sorted(name for name in AVRO_RECORDS if not hasattr(records, name))
    assert missing == []
    assert len(AVRO_RECORDS) >= 20  # the walk found the nested records too


@pytest.mark.parametrize("name", sorted(AVRO_RECORDS))
def test_a_typed_dict_has_the_fields_of_its_avro_record(name: str) -> None:
    schema = AVRO_RECORDS[name]
    typed = getattr(records, name)
    assert typing.is_typeddict(typed)
    fields = {f["name"]: f for f in schema["fields"]}
    assert set(typed.__required_keys__ | typed.__optional_keys__) == set(fields)
    # Only a field with a default may be absent from a record built by hand (the codec fills
    # defaults in when it decodes).
    for key in typed.__optional_keys__:
        assert "default" in fields[key], f"{name}.{key} is NotRequired but has no default"
