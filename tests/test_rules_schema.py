"""The JSON Schemas in rules/ are what editors check staff's YAML with: they must match the
models (never drift) and accept every YAML file we ship."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from service.engine.schema import generate, write_schemas

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
FIXTURES = ROOT / "tests" / "fixtures"
FIRST_LINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


def schema_name(path: Path) -> str:
    if path.parent.name == "templates":
        return "template.schema.json"
    special = {"lifecycle.yaml", "policy.yaml", "events.yaml"}
    return (
        path.name.replace(".yaml", ".schema.json") if path.name in special else "rules.schema.json"
    )


def shipped_yaml() -> list[Path]:
    """Every YAML file of the rules folder and of the test fixtures, but not rule tests."""
    found: list[Path] = []
    for folder in [RULES, *sorted(FIXTURES.glob("rules_*"))]:
        found += [p for p in folder.rglob("*.yaml") if "tests" not in p.relative_to(folder).parts]
    return sorted(found)


def load_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((RULES / name).read_text(encoding="utf-8"))
    return schema


def test_committed_schemas_match_the_models() -> None:
    for name, text in generate().items():
        committed = RULES / name
        assert committed.is_file(), f"{name} is missing: run `lifeline rules schema`"
        assert committed.read_text(encoding="utf-8") == text, (
            f"rules/{name} is out of date: run `lifeline rules schema` and commit the result"
        )


def test_schemas_are_valid_json_schema() -> None:
    for name in generate():
        jsonschema.Draft202012Validator.check_schema(load_schema(name))


def test_we_ship_yaml_of_every_kind() -> None:
    kinds = {schema_name(p) for p in shipped_yaml()}
    assert kinds == set(generate())


@pytest.mark.parametrize("path", shipped_yaml(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_yaml_is_valid_against_its_schema(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    declared = FIRST_LINE.match(text.splitlines()[0])
    assert declared, f"{path} should start with '# yaml-language-server: $schema=...'"
    assert (path.parent / declared.group(1)).resolve() == RULES / schema_name(path)

    validator = jsonschema.Draft202012Validator(load_schema(schema_name(path)))
    problems = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(yaml.safe_load(text))
    ]
    assert problems == []


def test_the_schema_rejects_what_the_loader_rejects() -> None:
    validator = jsonschema.Draft202012Validator(load_schema("rules.schema.json"))
    rule = {
        "id": "r",
        "category": "recall",
        "trigger": {"event": "Signed Up"},
        "steps": [{"send": {"channel": "push", "template": "nudge"}}, {"wait": "2d"}, "exit"],
    }
    assert validator.is_valid({"rules": [rule]})
    misspelt = {**rule, "steps": [{"send": {"channel": "push", "tempalte": "nudge"}}]}
    assert not validator.is_valid({"rules": [misspelt]})
    assert not validator.is_valid({"rules": [{**rule, "trigger": {"inactive_for": "14 days"}}]})
    assert not validator.is_valid({"rules": [{**rule, "category": "recal"}]})


def test_write_schemas_writes_only_what_changed(tmp_path: Path) -> None:
    assert sorted(p.name for p in write_schemas(tmp_path)) == sorted(generate())
    assert write_schemas(tmp_path) == []
    (tmp_path / "policy.schema.json").write_text("{}")
    assert write_schemas(tmp_path) == [tmp_path / "policy.schema.json"]
