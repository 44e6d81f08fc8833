"""YAML with positions: every value and key is located, so errors point at file:line:column."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[int | str, ...]


@dataclass(frozen=True)
class Located:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class _Scalar:
    style: str | None  # None (plain), "'", '"', "|" or ">"
    start: int  # index of the node in the source text
    end: int


@dataclass
class Document:
    file: str
    data: Any
    values: dict[Path_, Located] = field(default_factory=dict)
    keys: dict[Path_, Located] = field(default_factory=dict)
    text: str = ""
    scalars: dict[Path_, _Scalar] = field(default_factory=dict)

    def locate(self, path: Path_, *, key: bool = False) -> Located:
        """The position of the value at `path` (or of its key), else of its nearest parent."""
        for length in range(len(path), -1, -1):
            prefix = path[:length]
            if key and length == len(path) and prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return Located(self.file, 1, 1)

    def locate_in_string(self, path: Path_, offset: int) -> Located:
        """The position of character `offset` of the string value at `path`, so an error inside
        a long text (a message template) points at its own line, not at the start of the text."""
        start = self.locate(path)
        scalar = self.scalars.get(path)
        value = self._value(path)
        if scalar is None or not isinstance(value, str) or not 0 <= offset <= len(value):
            return start
        before = value[:offset].split("\n")
        row, col = len(before) - 1, len(before[-1])
        source = self.text[scalar.start : scalar.end]
        if scalar.style == "|":
            lines = self.text.splitlines()
            content = [line for line in lines[start.line :] if line.strip()]
            indent = len(content[0]) - len(content[0].lstrip(" ")) if content else 0
            return Located(self.file, start.line + 1 + row, indent + col + 1)
        if scalar.style in (None, "'", '"') and "\n" not in source:
            quote = 0 if scalar.style is None else 1
            return Located(self.file, start.line, start.column + quote + col)
        # Folded or multi-line flow text: find the rest of that line in the source.
        needle = value.split("\n")[row][col:].strip()[:40]
        found = source.find(needle) if needle else -1
        if found < 0:
            return start
        head = self.text[: scalar.start + found]
        return Located(self.file, head.count("\n") + 1, len(head) - head.rfind("\n"))

    def _value(self, path: Path_) -> Any:
        node = self.data
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node


class YamlError(Exception):
    def __init__(self, where: Located, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


# What staff most often trip over, said in their words.
_HINTS = {
    "mapping values are not allowed here": " (a value that contains ': ' must be in quotes)",
    "that cannot start any token": " (indent with spaces, not tabs; quote values that start "
    "with @, ` or %)",
}


def _mark(file: str, node: yaml.Node) -> Located:
    return Located(file, node.start_mark.line + 1, node.start_mark.column + 1)


def load(path: Path, display_name: str | None = None) -> Document:
    name = display_name or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise YamlError(Located(name, 1, 1), "not UTF-8 text") from None
    return loads(text, name)


def loads(text: str, name: str) -> Document:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Located(name, mark.line + 1, mark.column + 1) if mark else Located(name, 1, 1)
        problem = str(exc.problem or exc.context)
        hint = next((h for text, h in _HINTS.items() if text in problem), "")
        raise YamlError(where, f"YAML syntax: {problem}{hint}") from None
    doc = Document(name, None, text=text)
    if root is None:
        return doc
    doc.data = _convert(doc, root, (), yaml.SafeLoader(""))
    return doc


def _convert(doc: Document, node: yaml.Node, path: Path_, constructor: yaml.SafeLoader) -> Any:
    doc.values[path] = _mark(doc.file, node)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                first = doc.keys[(*path, key)].line
                raise YamlError(
                    _mark(doc.file, key_node), f"duplicate key {key!r} (first on line {first})"
                )
            doc.keys[(*path, key)] = _mark(doc.file, key_node)
            result[key] = _convert(doc, value_node, (*path, key), constructor)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(doc, item, (*path, i), constructor) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.ScalarNode):
        doc.scalars[path] = _Scalar(node.style, node.start_mark.index, node.end_mark.index)
    return constructor.construct_object(node, deep=True)
