"""Loading a rules folder: everything is checked and every problem reported, or nothing loads.

Operations staff edit these files, so each problem names file:line:column of the offending key
or value and says what was expected in their words. A folder with any problem raises
RulesInvalid: callers keep the last good RuleSet live.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from service.engine import staff_format, templates
from service.engine.policy import Policy
from service.engine.staff_format import CHANNELS, Rule, RuleFile
from service.engine.yamlsource import Document, Located, Path_, YamlError, load
from service.kit.events import INTERNAL_EVENTS
from service.kit.staff_format import Strict
from service.lifecycle.staff_format import Lifecycle

LIFECYCLE_FILE = "lifecycle.yaml"
POLICY_FILE = "policy.yaml"
EVENTS_FILE = "events.yaml"
TEMPLATES_DIR = "templates"
SPECIAL_FILES = (LIFECYCLE_FILE, POLICY_FILE, EVENTS_FILE)

# Events Lifeline itself records; rules may use them without listing them in events.yaml.

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


class RulesInvalid(Exception):
    def __init__(self, errors: Iterable[RuleError]):
        self.errors = sorted(set(errors))
        count = len(self.errors)
        super().__init__(
            f"{count} error{'s' if count != 1 else ''} in the rules:\n"
            + "\n".join(str(e) for e in self.errors)
        )


class EventCatalog(Strict):
    """rules/events.yaml: the tracking plan. Rules may only use events listed here."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Lifeline event catalog")

    events: list[str] = Field(
        default_factory=list, description="every event name the product sends, spelled exactly"
    )


@dataclass(frozen=True)
class LoadedRule:
    rule: Rule
    file: str
    version: str  # 12 hex characters of the sha256 of the rule's canonical JSON

    @property
    def id(self) -> str:
        return self.rule.id


@dataclass(frozen=True)
class RuleSet:
    rules: list[LoadedRule]  # enabled rules only
    lifecycle: Lifecycle
    policy: Policy
    templates: dict[str, templates.Template]
    events: frozenset[str]  # the catalog and the internal events
    version: str  # sha256 of everything loaded

    def rule(self, rule_id: str) -> LoadedRule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


def load_rules(directory: Path) -> RuleSet:
    """The whole folder, or RulesInvalid listing every problem (sorted by file and line)."""
    loader = _Loader(directory)
    ruleset = loader.load()
    if loader.errors or ruleset is None:
        raise RulesInvalid(loader.errors)
    return ruleset


def load_template_folder(directory: Path) -> dict[str, templates.Template]:
    loader = _Loader(directory.parent)
    found = loader.load_templates(directory)
    if loader.errors:
        raise RulesInvalid(loader.errors)
    return {name: t for name, (t, _) in found.items() if t is not None}


def canonical_json(value: BaseModel | Any) -> str:
    data = value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def rule_version(rule: Rule) -> str:
    return hashlib.sha256(canonical_json(rule).encode()).hexdigest()[:12]


# --- the folder ------------------------------------------------------------------------------


class _Loader:
    def __init__(self, directory: Path):
        self.directory = directory
        self.errors: list[RuleError] = []

    def error(self, where: Located, message: str) -> None:
        self.errors.append(RuleError.at(where, message))

    def load(self) -> RuleSet | None:
        if not self.directory.is_dir():
            self.errors.append(RuleError(str(self.directory), 1, 1, "no such rules folder"))
            return None
        lifecycle = self.load_special(LIFECYCLE_FILE, Lifecycle)
        policy = self.load_special(POLICY_FILE, Policy)
        catalog = self.load_special(EVENTS_FILE, EventCatalog)
        found = self.load_templates(self.directory / TEMPLATES_DIR)
        rules: list[tuple[Rule, Document]] = []

        events = None
        if catalog is not None:
            events = _EventCheck(self, catalog[0], catalog[1], self.display(EVENTS_FILE))
        if lifecycle is not None and events is not None:
            self.check_lifecycle_events(*lifecycle, events)
        stages = lifecycle[0].names() if lifecycle is not None else None
        for raw, doc, path in self.load_rule_files():
            _RuleCheck(self, raw, doc, path, found, stages, events).run()
            rule = _valid(Rule, raw)
            if rule is not None:
                rules.append((rule, doc))

        if self.errors or lifecycle is None or policy is None or catalog is None:
            return None
        loaded = [
            LoadedRule(rule, doc.file, rule_version(rule)) for rule, doc in rules if rule.enabled
        ]
        valid = {name: t for name, (t, _) in found.items() if t is not None}
        known = frozenset(catalog[0].events) | frozenset(INTERNAL_EVENTS)
        everything = {
            "rules": [
                # The file by name only: the same folder has the same version wherever it is.
                {"file": Path(doc.file).name, "rule": rule.model_dump(mode="json", by_alias=True)}
                for rule, doc in sorted(rules, key=lambda r: r[0].id)
            ],
            "lifecycle": lifecycle[0].model_dump(mode="json", by_alias=True),
            "policy": policy[0].model_dump(mode="json", by_alias=True),
            "templates": {n: t.model_dump(mode="json", by_alias=True) for n, t in valid.items()},
            "events": sorted(known),
        }
        version = hashlib.sha256(canonical_json(everything).encode()).hexdigest()
        return RuleSet(loaded, lifecycle[0], policy[0], valid, known, version)

    def display(self, *parts: str) -> str:
        return str(self.directory.joinpath(*parts))

    def read(self, path: Path) -> Document | None:
        name = str(path)
        try:
            return load(path, name)
        except YamlError as exc:
            self.error(exc.where, exc.message)
        except OSError as exc:
            self.errors.append(RuleError(name, 1, 1, f"cannot read the file: {exc.strerror}"))
        return None

    def validate(self, doc: Document, model_type: type[M]) -> M | None:
        """The whole document as `model_type`; an empty file is an empty mapping."""
        try:
            return model_type.model_validate({} if doc.data is None else doc.data)
        except ValidationError as exc:
            for where, message in _schema_errors(doc, exc.errors(), model_type):
                self.error(where, message)
            return None

    def load_special(self, name: str, model_type: type[M]) -> tuple[M, Document] | None:
        path = self.directory / name
        if not path.is_file():
            self.errors.append(RuleError(str(path), 1, 1, f"missing file: {_PURPOSE[name]}"))
            return None
        doc = self.read(path)
        if doc is None:
            return None
        loaded = self.validate(doc, model_type)
        return (loaded, doc) if loaded is not None else None

    def load_templates(
        self, directory: Path
    ) -> dict[str, tuple[templates.Template | None, Document | None]]:
        """Every template by name; the model is None when its file has errors (the name is
        still known, so rules using it do not also get 'unknown template')."""
        found: dict[str, tuple[templates.Template | None, Document | None]] = {}
        if not directory.is_dir():
            return found
        self.refuse_yml(directory)
        for path in sorted(directory.glob("*.yaml")):
            doc = self.read(path)
            template = None
            if doc is not None:
                template = self.validate(doc, templates.Template)
                for where, message in templates.check_template(doc):
                    self.error(where, message)
            found[path.stem] = (template, doc)
        return found

    def load_rule_files(self) -> Iterator[tuple[dict[str, Any], Document, Path_]]:
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
            items = doc.data.get("rules") if isinstance(doc.data, dict) else None
            if doc.data is None or doc.data == {}:
                # Most likely a file caught half-saved or emptied by mistake: loading it would
                # end every journey of the rules it held. To retire rules, delete the file
                # (or write `rules: []`).
                self.error(
                    doc.locate(()),
                    "this file is empty: delete the file to remove its rules, "
                    "or write them under 'rules:'",
                )
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
            self.errors.append(
                RuleError(str(path), 1, 1, "rename this file to end in .yaml: it is not read")
            )

    def check_lifecycle_events(
        self, lifecycle: Lifecycle, doc: Document, events: _EventCheck
    ) -> None:
        events.check(doc, ("activation", "event"), lifecycle.activation.event)
        events.check(doc, ("engagement", "event"), lifecycle.engagement.event)
        for i, name in enumerate(lifecycle.not_activity):
            events.check(doc, ("not_activity", i), name)


_PURPOSE = {
    LIFECYCLE_FILE: "the lifecycle stages and their thresholds (lifecycle.yaml)",
    POLICY_FILE: "the contact policy: frequency caps and quiet hours (policy.yaml)",
    EVENTS_FILE: "the event catalog listing every event name the product sends (events.yaml)",
}


class _EventCheck:
    def __init__(self, loader: _Loader, catalog: EventCatalog, doc: Document, display: str):
        self.loader = loader
        self.display = display
        self.known = set(catalog.events) | set(INTERNAL_EVENTS)
        seen: set[str] = set()
        for i, name in enumerate(catalog.events):
            if name in seen:
                loader.error(doc.locate(("events", i)), f"{name!r} is listed twice")
            seen.add(name)

    def check(self, doc: Document, path: Path_, name: str) -> None:
        if name in self.known:
            return
        same = sorted(k for k in self.known if k.lower() == name.lower())
        guess = f" (did you mean {same[0]!r}?)" if same else did_you_mean(name, self.known)
        self.loader.error(
            doc.locate(path),
            f"unknown event {name!r}{guess}: event names must be listed in {self.display}",
        )


# --- one rule --------------------------------------------------------------------------------


_CONDITION: TypeAdapter[Any] = TypeAdapter(staff_format.Condition)


def _valid(model_type: type[M] | TypeAdapter[Any], data: Any) -> Any:
    """`data` as a model, or None when it has schema errors (those are reported already)."""
    try:
        if isinstance(model_type, TypeAdapter):
            return model_type.validate_python(data)
        return model_type.model_validate(data)
    except ValidationError:
        return None


class _RuleCheck:
    """The checks that need the rest of the folder or the shape of the whole journey.

    They read the rule's data and validate one piece at a time, so a schema error in one step
    does not hide an unknown template in the next.
    """

    def __init__(
        self,
        loader: _Loader,
        rule: dict[str, Any],
        doc: Document,
        path: Path_,
        found: dict[str, tuple[templates.Template | None, Document | None]],
        stages: list[str] | None,
        events: _EventCheck | None,
    ):
        self.loader, self.rule, self.doc, self.path = loader, rule, doc, path
        self.found, self.stages, self.events = found, stages, events
        variants = rule.get("variants")
        self.variants = {  # position in the list -> variant id
            i: v["id"]
            for i, v in enumerate(variants if isinstance(variants, list) else [])
            if isinstance(v, dict) and isinstance(v.get("id"), str)
        }

    def error(self, path: Path_, message: str, *, key: bool = False) -> None:
        self.loader.error(self.doc.locate((*self.path, *path), key=key), message)

    def event(self, path: Path_, name: object) -> None:
        if self.events is not None and isinstance(name, str):
            self.events.check(self.doc, (*self.path, *path), name)

    def stage(self, path: Path_, name: object) -> None:
        if self.stages is None or not isinstance(name, str) or name in self.stages:
            return
        self.error(
            path,
            f"unknown stage {name!r}{did_you_mean(name, self.stages)}: the stages in "
            f"{self.loader.display(LIFECYCLE_FILE)} are " + ", ".join(self.stages),
        )

    def run(self) -> None:
        rule = self.rule
        trigger: staff_format.Trigger | None = _valid(staff_format.Trigger, rule.get("trigger"))
        if trigger is not None:
            self.event(("trigger", "event"), trigger.event)
            if trigger.stage_changed is not None:
                self.stage(("trigger", "stage_changed", "to"), trigger.stage_changed.to)
                self.stage(("trigger", "stage_changed", "from"), trigger.stage_changed.from_)
            self.condition(("trigger", "where"), trigger.where)
            if "key" in rule and trigger.event is None:
                self.error(
                    ("key",),
                    "key only works with an event trigger: it names a property of the "
                    f"triggering event, and this rule is triggered by {trigger.kind}",
                    key=True,
                )
        self.condition(("when",), _valid(_CONDITION, rule["when"]) if "when" in rule else None)
        goal: staff_format.Goal | None = _valid(staff_format.Goal, rule.get("goal"))
        if goal is not None:
            self.event(("goal", "event"), goal.event)
            self.condition(("goal", "where"), goal.where)
        exit_on = rule.get("exit_on")
        for i, name in enumerate(exit_on if isinstance(exit_on, list) else []):
            self.event(("exit_on", i), name)
        seen: set[str] = set()
        for i, variant in self.variants.items():
            if variant in seen:
                self.error(("variants", i, "id"), f"variant id {variant!r} is used twice")
            seen.add(variant)
        self.steps(("steps",), rule.get("steps"))

    def condition(self, path: Path_, condition: Any) -> None:
        if isinstance(condition, staff_format.All):
            for i, part in enumerate(condition.all):
                self.condition((*path, "all", i), part)
        elif isinstance(condition, staff_format.Any_):
            for i, part in enumerate(condition.any):
                self.condition((*path, "any", i), part)
        elif isinstance(condition, staff_format.Not):
            self.condition((*path, "not"), condition.not_)
        elif isinstance(condition, staff_format.Count):
            self.event((*path, "count", "event"), condition.count.event)
            self.condition((*path, "count", "where"), condition.count.where)
        elif isinstance(condition, staff_format.Comparison) and condition.user == "stage":
            operator, operand = condition.operator, condition.operand
            if isinstance(operand, list):
                for i, item in enumerate(operand):
                    self.stage((*path, operator, i), item)
            elif operator in ("eq", "ne"):
                self.stage((*path, operator), operand)

    def steps(self, path: Path_, steps: Any) -> None:
        if not isinstance(steps, list):
            return
        for i, step in enumerate(steps):
            here = (*path, i)
            if i > 0 and _ends(steps[i - 1]):
                line = self.doc.locate((*self.path, *path, i - 1)).line
                self.error(here, "this step can never run: " + _why_ended(steps[i - 1], line))
                return
            kind = _step_kind(step)
            if kind == "send":
                send: staff_format.SendSpec | None = _valid(staff_format.SendSpec, step["send"])
                if send is not None:
                    self.send((*here, "send"), send)
            elif kind == "wait_for":
                wait_for: staff_format.WaitForSpec | None = _valid(
                    staff_format.WaitForSpec, step["wait_for"]
                )
                if wait_for is not None:
                    self.event((*here, "wait_for", "event"), wait_for.event)
                    self.condition((*here, "wait_for", "where"), wait_for.where)
                self.steps((*here, "on_event"), step.get("on_event"))
                self.steps((*here, "on_timeout"), step.get("on_timeout"))
            elif kind == "if":
                self.condition((*here, "if"), _valid(_CONDITION, step["if"]))
                self.steps((*here, "then"), step.get("then"))
                self.steps((*here, "else"), step.get("else"))

    def send(self, path: Path_, send: staff_format.SendSpec) -> None:
        seen: set[str] = set()
        for i, channel in enumerate(send.fallback):
            if channel == send.channel:
                self.error(
                    (*path, "fallback", i),
                    f"fallback lists {channel}, the channel this step already sends on",
                )
            elif channel in seen:
                self.error((*path, "fallback", i), f"fallback lists {channel} twice")
            seen.add(channel)

        names: list[tuple[Path_, str]]
        if isinstance(send.template, str):
            names = [((*path, "template"), send.template)]
        else:
            names = [((*path, "template", v), name) for v, name in send.template.items()]
            self.variant_templates((*path, "template"), send.template)
        for where, name in names:
            self.template(where, name, send.channel, (*path, "fallback"), send.fallback)

    def variant_templates(self, path: Path_, by_variant: dict[str, str]) -> None:
        variants = list(dict.fromkeys(self.variants.values()))
        if not variants:
            self.error(
                path,
                "a template per variant needs variants, and this rule has none: "
                "give one template name or add variants to the rule",
            )
            return
        for variant in by_variant:
            if variant not in variants:
                self.error(
                    (*path, variant),
                    f"{variant!r} is not a variant of this rule{did_you_mean(variant, variants)}: "
                    "its variants are " + ", ".join(variants),
                    key=True,
                )
        missing = [v for v in variants if v not in by_variant]
        if missing:
            self.error(path, "no template for variant " + ", ".join(repr(v) for v in missing))

    def template(
        self,
        path: Path_,
        name: str,
        channel: str,
        fallback_path: Path_,
        fallback: Sequence[str],
    ) -> None:
        if name not in self.found:
            self.error(
                path,
                f"unknown template {name!r}{did_you_mean(name, self.found)}: templates are the "
                f"files in {self.loader.display(TEMPLATES_DIR)}/",
            )
            return
        template = self.found[name][0]
        if template is None:
            return  # its own errors are reported at the template
        channels = template.channels()
        if channel not in channels:
            self.error(
                path,
                f"template {name!r} has no {channel} section, but this step sends it by {channel}",
            )
        for i, other in enumerate(fallback):
            if other not in channels and other != channel:
                self.error(
                    (*fallback_path, i),
                    f"template {name!r} has no {other} section, needed for the fallback to {other}",
                )


def _step_kind(step: Any) -> str | None:
    if step == "exit":
        return "exit"
    if isinstance(step, dict):
        return next((k for k in ("send", "wait_for", "wait", "if", "exit") if k in step), None)
    return None


def _ends(step: Any) -> bool:
    """Whether every way through this step (as written in the file) ends the journey."""
    kind = _step_kind(step)
    if kind == "exit":
        return True
    if kind == "if":
        return _all_end(step.get("then")) and _all_end(step.get("else"))
    if kind == "wait_for":
        return _all_end(step.get("on_event")) and _all_end(step.get("on_timeout"))
    return False


def _all_end(steps: Any) -> bool:
    return isinstance(steps, list) and bool(steps) and _ends(steps[-1])


def _why_ended(step: Any, line: int) -> str:
    kind = _step_kind(step)
    if kind == "if":
        return f"both then and else of the if on line {line} end with exit"
    if kind == "wait_for":
        return f"both on_event and on_timeout of the wait_for on line {line} end with exit"
    return f"the journey ends at the exit on line {line}"


# --- schema errors ---------------------------------------------------------------------------

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


def _schema_errors(
    doc: Document, details: list[ErrorDetails], root: type[BaseModel]
) -> Iterator[tuple[Located, str]]:
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


_ALL_FIELDS = _every_field([RuleFile, Lifecycle, Policy, EventCatalog, templates.Template])


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
