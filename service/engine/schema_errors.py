"""Schema errors in staff words: pydantic's validation errors, located in the YAML and said the
way operations staff think about the file (did-you-mean, "expected a whole number, not 'ten'").

One problem often shows up as several pydantic errors (a union tries every branch); these
functions keep the one that says what is wrong and drop the noise.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from service.engine.policy import Policy
from service.engine.staff_format import CHANNELS, EventCatalog, RuleFile
from service.engine.templates import Template
from service.engine.yamlsource import Document, Located, Path_
from service.lifecycle.staff_format import Lifecycle

_SHAPES = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (name: value)",
    "model_type": "a mapping (name: value)",
    "model_attributes_type": "a mapping (name: value)",
    "literal_error": "",
}
_KIND_WORDS = {
    "invalid_step": ("step", ("send", "wait", "wait_for", "if", "exit")),
    "invalid_condition": (
        "condition",
        ("property", "trait", "user", "count", "first_time", "first_seen", "all", "any", "not"),
    ),
}


@dataclass
class _Problem:
    path: Path_  # where in the data
    key: bool  # point at the key rather than the value
    error: ErrorDetails
    model_path: list[int | str]  # the loc as pydantic gave it, union tags included


def schema_errors(
    doc: Document, details: list[ErrorDetails], root: type[BaseModel]
) -> Iterator[tuple[Located, str]]:
    """Where and what each problem is, from pydantic's errors for `doc` validated as `root`."""
    problems = [_walk(doc.data, detail) for detail in details]
    shapes: dict[Path_, list[_Problem]] = {}
    others: list[_Problem] = []
    for problem in problems:
        if problem.error["type"] in _SHAPES:
            shapes.setdefault(problem.path, []).append(problem)
        else:
            others.append(problem)
    misspelt = {
        (p.path[:-1], str(p.model_path[-1])) for p in others if p.error["type"] == "extra_forbidden"
    }
    for problem in others:
        if problem.error["type"] == "missing" and any(
            path == problem.path and did_you_mean(extra, [str(problem.model_path[-1])])
            for path, extra in misspelt
        ):
            continue  # "unknown field 'tempalte' (did you mean 'template'?)" says it all
        yield doc.locate(problem.path, key=problem.key), _message(problem, root)
    for path, group in shapes.items():
        # A union: when some branch got further than a wrong shape, that branch's errors say
        # what is wrong; the mismatched shapes of the other branches are noise.
        if any(p.path[: len(path)] == path for p in problems if all(p is not g for g in group)):
            continue
        yield doc.locate(path), _shape_message(group)


def _walk(data: Any, detail: ErrorDetails) -> _Problem:
    """Follow the error's loc through the data; parts that are not keys of the data (union
    tags such as 'Send', type names such as 'str') are skipped."""
    node = data
    path: list[int | str] = []
    key = False
    for part in detail["loc"]:
        if part == "[key]":
            key = True
        elif _has(node, part):
            node = node[part]
            path.append(part)
    if detail["type"] == "extra_forbidden":
        key = True
    return _Problem(tuple(path), key, detail, list(detail["loc"]))


def _has(node: Any, part: int | str) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _message(problem: _Problem, root: type[BaseModel]) -> str:
    detail = problem.error
    kind, loc, value = detail["type"], problem.model_path, detail["input"]
    ctx = detail.get("ctx") or {}
    if kind == "missing":
        name = str(loc[-1])
        owner = _model_at(root, loc[:-1])
        info = owner.model_fields.get(name) if owner else None
        info = info or (_field_by_alias(owner, name) if owner else None)
        hint = f": {info.description}" if info is not None and info.description else ""
        return f"missing {name!r}{hint}"
    if kind == "extra_forbidden":
        name = str(loc[-1])
        owner = _model_at(root, loc[:-1])
        allowed = _field_names(owner) if owner else _ALL_FIELDS
        guess = did_you_mean(name, allowed)
        if guess or owner is None:
            return f"unknown field {name!r}{guess}"
        return f"unknown field {name!r}: allowed here are " + ", ".join(allowed)
    if kind in _KIND_WORDS:
        word, choices = _KIND_WORDS[kind]
        if isinstance(value, dict) and value:
            first = str(next(iter(value)))
            return (
                f"unknown {word} {first!r}{did_you_mean(first, choices)}: a {word} is one of "
                + ", ".join(choices)
            )
        return str(detail["msg"])
    if kind in ("value_error", "assertion_error"):
        return re.sub(r"^(Value|Assertion) error, ", "", str(detail["msg"]))
    if kind == "string_pattern_mismatch":
        return _pattern_message(loc, value, str(ctx.get("pattern", "")))
    if kind == "too_short":
        if loc and loc[-1] == "steps":
            return "a rule needs at least one step"
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "string_too_long":
        return f"too long: at most {ctx.get('max_length')} characters"
    bounds = {
        "greater_than": "more than {gt}",
        "greater_than_equal": "at least {ge}",
        "less_than": "less than {lt}",
        "less_than_equal": "at most {le}",
    }
    if kind in bounds:
        limit = {k: _number(v) for k, v in ctx.items()}
        return f"must be {bounds[kind].format(**limit)}, not {_show(value)}"
    return str(detail["msg"])


def _shape_message(group: list[_Problem]) -> str:
    value = group[0].error["input"]
    expected: list[str] = []
    for problem in group:
        if problem.error["type"] == "literal_error":
            choices = re.findall(r"'([^']*)'", str((problem.error.get("ctx") or {})["expected"]))
            if len(group) == 1 and isinstance(value, str):
                return _literal_message(value, choices)
            expected += [repr(c) for c in choices]
        else:
            expected.append(_SHAPES[problem.error["type"]])
    unique = list(dict.fromkeys(expected))
    alternatives = unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " or " + unique[-1]
    quotes = (
        " (put it in quotes)"
        if unique == ["text"] and isinstance(value, bool | int | float)
        else ""
    )
    return f"expected {alternatives}, not {_show(value)}{quotes}"


def _literal_message(value: str, choices: list[str]) -> str:
    guess = did_you_mean(value, choices)
    if tuple(choices) == CHANNELS:
        return f"unknown channel {value!r}{guess}: channels are " + ", ".join(choices)
    return f"unknown value {value!r}{guess}: expected one of " + ", ".join(choices)


def _pattern_message(loc: list[int | str], value: Any, pattern: str) -> str:
    if loc and loc[-1] == "[key]":
        return f"{value!r} is not a locale: write a language such as zh, or zh-CN"
    if "variants" in loc:
        return f"variant id {value!r} may only use letters, digits, - and _"
    if loc and loc[-1] == "id":
        return (
            f"rule id {value!r} may only use lower-case letters, digits, - and _, "
            "starting with a letter or digit, e.g. welcome-email"
        )
    return f"{_show(value)} does not have the expected form {pattern}"


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


# --- the models, walked by an error's loc (for did-you-mean) ---------------------------------


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    found = _resolve(root, list(loc))
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def _resolve(tp: Any, parts: list[int | str]) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if not parts:
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            models = [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
            return models[0] if len(models) == 1 else None
        return tp
    part, rest = parts[0], parts[1:]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(tp):
            if typing.get_origin(member) is typing.Annotated and any(
                getattr(m, "tag", None) == part for m in typing.get_args(member)[1:]
            ):
                return _resolve(member, rest)
        for member in _members(tp):
            if getattr(member, "__name__", None) == part:
                return _resolve(member, rest)
        for member in _members(tp):
            found = _resolve(member, parts)
            if found is not None:
                return found
        return None
    if origin is list:
        return _resolve(typing.get_args(tp)[0], rest) if isinstance(part, int) else None
    if origin is dict:
        return _resolve(typing.get_args(tp)[1], rest) if isinstance(part, str) else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(str(part)) or _field_by_alias(tp, str(part))
        return _resolve(info.annotation, rest) if info is not None else None
    return None


def _members(tp: Any) -> list[Any]:
    members = []
    for member in typing.get_args(tp):
        while typing.get_origin(member) is typing.Annotated:
            member = typing.get_args(member)[0]
        if member is not type(None):
            members.append(member)
    return members


def _field_by_alias(owner: type[BaseModel], alias: str) -> Any:
    return next((f for f in owner.model_fields.values() if f.alias == alias), None)


def _field_names(owner: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in owner.model_fields.items()]


def _every_field(roots: Iterable[type[BaseModel]]) -> list[str]:
    names: dict[str, None] = {}
    todo, seen = list(roots), set()
    while todo:
        owner = todo.pop()
        if owner in seen:
            continue
        seen.add(owner)
        names.update(dict.fromkeys(_field_names(owner)))
        for info in owner.model_fields.values():
            todo += _models_in(info.annotation)
    return sorted(names)


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in _models_in(arg)]


_ALL_FIELDS = _every_field([RuleFile, Lifecycle, Policy, EventCatalog, Template])


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
