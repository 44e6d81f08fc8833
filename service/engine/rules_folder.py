"""Reading a rules folder: its layout, and each YAML file read and validated against its format.

Reading does not stop at the first problem: every one is kept, with the file:line:column of
the offending key or value, so staff see them all at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from service.engine.schema_errors import schema_errors
from service.engine.staff_format import RuleFile
from service.engine.yamlsource import Document, Located, Path_, YamlError, load

LIFECYCLE_FILE = "lifecycle.yaml"
POLICY_FILE = "policy.yaml"
EVENTS_FILE = "events.yaml"
TEMPLATES_DIR = "templates"
SPECIAL_FILES = (LIFECYCLE_FILE, POLICY_FILE, EVENTS_FILE)

_PURPOSE = {
    LIFECYCLE_FILE: "the lifecycle stages and their thresholds (lifecycle.yaml)",
    POLICY_FILE: "the contact policy: frequency caps and quiet hours (policy.yaml)",
    EVENTS_FILE: "the event catalog listing every event name the product sends (events.yaml)",
}

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, order=True)
class RuleError:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    @classmethod
    def at(cls, where: Located, message: str) -> RuleError:
        return cls(where.file, where.line, where.column, message)


def as_model(model_type: type[M] | TypeAdapter[Any], data: Any) -> Any:
    """`data` as a model, or None when it has schema errors (those are reported already)."""
    try:
        if isinstance(model_type, TypeAdapter):
            return model_type.validate_python(data)
        return model_type.model_validate(data)
    except ValidationError:
        return None


class Folder:
    """A rules folder being read, and every problem found in it so far."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.errors: list[RuleError] = []

    def error(self, where: Located, message: str) -> None:
        self.errors.append(RuleError.at(where, message))

    def file_error(self, path: Path, message: str) -> None:
        """A problem with a whole file (or folder), reported at its first line."""
        self.errors.append(RuleError(str(path), 1, 1, message))

    def display(self, *parts: str) -> str:
        return str(self.directory.joinpath(*parts))

    def read(self, path: Path) -> Document | None:
        name = str(path)
        try:
            return load(path, name)
        except YamlError as exc:
            self.error(exc.where, exc.message)
        except OSError as exc:
            self.file_error(path, f"cannot read the file: {exc.strerror}")
        return None

    def validate(self, doc: Document, model_type: type[M]) -> M | None:
        """The whole document as `model_type`; an empty file is an empty mapping."""
        try:
            return model_type.model_validate({} if doc.data is None else doc.data)
        except ValidationError as exc:
            for where, message in schema_errors(doc, exc.errors(), model_type):
                self.error(where, message)
            return None

    def load_special(self, name: str, model_type: type[M]) -> tuple[M, Document] | None:
        """One of the folder's own files (lifecycle, policy, events), which must exist."""
        path = self.directory / name
        if not path.is_file():
            self.file_error(path, f"missing file: {_PURPOSE[name]}")
            return None
        doc = self.read(path)
        if doc is None:
            return None
        loaded = self.validate(doc, model_type)
        return (loaded, doc) if loaded is not None else None

    def rule_items(self) -> Iterator[tuple[dict[str, Any], Document, Path_]]:
        """Each rule as written (a mapping), after the schema checks of its file."""
        self.refuse_yml(self.directory)
        ids: dict[str, Located] = {}
        for path in sorted(self.directory.glob("*.yaml")):
            if path.name in SPECIAL_FILES:
                continue
            doc = self.read(path)
            if doc is None:
                continue
            self.validate(doc, RuleFile)
            if doc.data is None or doc.data == {}:
                # Most likely a file caught half-saved or emptied by mistake: loading it would
                # end every journey of the rules it held. To retire rules, delete the file
                # (or write `rules: []`).
                self.error(
                    doc.locate(()),
                    "this file is empty: delete the file to remove its rules, "
                    "or write them under 'rules:'",
                )
            yield from self._rules_of(doc, ids)

    def _rules_of(
        self, doc: Document, ids: dict[str, Located]
    ) -> Iterator[tuple[dict[str, Any], Document, Path_]]:
        """The mappings under the file's `rules:`; an id already used (in `ids`, any file of
        the folder) is an error."""
        items = doc.data.get("rules") if isinstance(doc.data, dict) else None
        for i, item in enumerate(items if isinstance(items, list) else []):
            if not isinstance(item, dict):
                continue
            rule_id = item.get("id")
            if isinstance(rule_id, str):
                where = doc.locate(("rules", i, "id"))
                if rule_id in ids:
                    self.error(
                        where, f"duplicate rule id {rule_id!r}: already used at {ids[rule_id]}"
                    )
                ids.setdefault(rule_id, where)
            yield item, doc, ("rules", i)

    def refuse_yml(self, directory: Path) -> None:
        for path in sorted(directory.glob("*.yml")):
            self.file_error(path, "rename this file to end in .yaml: it is not read")
