"""JSON Schemas of the files in rules/, generated from the models, so editors that read the
`# yaml-language-server: $schema=...` line complete and check what staff type.

The committed files are compared with freshly generated ones in the tests: change a model,
then run `lifeline rules schema` and commit the result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from service.engine.policy import Policy
from service.engine.staff_format import EventCatalog, RuleFile
from service.engine.templates import Template
from service.lifecycle.staff_format import Lifecycle

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# file name in rules/ -> (model, what the file is)
SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "rules.schema.json": (RuleFile, "A file of Lifeline rules: rules/*.yaml."),
    "lifecycle.schema.json": (Lifecycle, "The lifecycle stages: rules/lifecycle.yaml."),
    "policy.schema.json": (Policy, "Frequency caps and quiet hours: rules/policy.yaml."),
    "events.schema.json": (EventCatalog, "The event catalog: rules/events.yaml."),
    "template.schema.json": (Template, "A message template: rules/templates/<name>.yaml."),
}


def schema_of(model: type[BaseModel], description: str) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return {"$schema": DIALECT, **schema, "description": description}


def generate() -> dict[str, str]:
    """File name -> the JSON text it should hold."""
    return {
        name: json.dumps(schema_of(model, description), indent=2, ensure_ascii=False) + "\n"
        for name, (model, description) in SCHEMAS.items()
    }


def write_schemas(directory: Path) -> list[Path]:
    """(Re)write every schema file in `directory`; returns the files whose content changed."""
    changed = []
    for name, text in generate().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed
