"""The checks of a rule that need the rest of the folder or the shape of the whole journey:
event names against the catalog, stage names against the lifecycle, templates against
rules/templates/, and steps that can never run because every way before them exits.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from service.engine import staff_format
from service.engine.rules_folder import LIFECYCLE_FILE, TEMPLATES_DIR, Folder, as_model
from service.engine.schema_errors import did_you_mean
from service.engine.staff_format import EventCatalog
from service.engine.template_checks import Found, TemplateReferences
from service.engine.yamlsource import Document, Path_
from service.kit.events import INTERNAL_EVENTS
from service.lifecycle.staff_format import Lifecycle


class EventNames:
    """The events rules may use: the catalog's, and the ones Lifeline itself records."""

    def __init__(self, folder: Folder, catalog: EventCatalog, doc: Document, display: str):
        self.folder = folder
        self.display = display
        self.known = set(catalog.events) | set(INTERNAL_EVENTS)
        seen: set[str] = set()
        for i, name in enumerate(catalog.events):
            if name in seen:
                folder.error(doc.locate(("events", i)), f"{name!r} is listed twice")
            seen.add(name)

    def check(self, doc: Document, path: Path_, name: str) -> None:
        if name in self.known:
            return
        same = sorted(k for k in self.known if k.lower() == name.lower())
        guess = f" (did you mean {same[0]!r}?)" if same else did_you_mean(name, self.known)
        self.folder.error(
            doc.locate(path),
            f"unknown event {name!r}{guess}: event names must be listed in {self.display}",
        )


def check_lifecycle_events(lifecycle: Lifecycle, doc: Document, events: EventNames) -> None:
    events.check(doc, ("activation", "event"), lifecycle.activation.event)
    events.check(doc, ("engagement", "event"), lifecycle.engagement.event)
    for i, name in enumerate(lifecycle.not_activity):
        events.check(doc, ("not_activity", i), name)


_CONDITION: TypeAdapter[Any] = TypeAdapter(staff_format.Condition)


class RuleCheck:
    """The checks of one rule.

    They read the rule's data and validate one piece at a time, so a schema error in one step
    does not hide an unknown template in the next.
    """

    def __init__(
        self,
        folder: Folder,
        rule: dict[str, Any],
        doc: Document,
        path: Path_,
        found: Found,
        stages: list[str] | None,
        events: EventNames | None,
    ):
        self.folder, self.rule, self.doc, self.path = folder, rule, doc, path
        self.stages, self.events = stages, events
        variants = rule.get("variants")
        self.variants = {  # position in the list -> variant id
            i: v["id"]
            for i, v in enumerate(variants if isinstance(variants, list) else [])
            if isinstance(v, dict) and isinstance(v.get("id"), str)
        }
        variant_ids = list(dict.fromkeys(self.variants.values()))
        self.templates = TemplateReferences(
            found, variant_ids, folder.display(TEMPLATES_DIR), self.error
        )

    def error(self, path: Path_, message: str, *, key: bool = False) -> None:
        self.folder.error(self.doc.locate((*self.path, *path), key=key), message)

    def event(self, path: Path_, name: object) -> None:
        if self.events is not None and isinstance(name, str):
            self.events.check(self.doc, (*self.path, *path), name)

    def stage(self, path: Path_, name: object) -> None:
        if self.stages is None or not isinstance(name, str) or name in self.stages:
            return
        self.error(
            path,
            f"unknown stage {name!r}{did_you_mean(name, self.stages)}: the stages in "
            f"{self.folder.display(LIFECYCLE_FILE)} are " + ", ".join(self.stages),
        )

    def run(self) -> None:
        rule = self.rule
        trigger: staff_format.Trigger | None = as_model(staff_format.Trigger, rule.get("trigger"))
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
        self.condition(("when",), as_model(_CONDITION, rule["when"]) if "when" in rule else None)
        goal: staff_format.Goal | None = as_model(staff_format.Goal, rule.get("goal"))
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
                send: staff_format.SendSpec | None = as_model(staff_format.SendSpec, step["send"])
                if send is not None:
                    self.send((*here, "send"), send)
            elif kind == "wait_for":
                wait_for: staff_format.WaitForSpec | None = as_model(
                    staff_format.WaitForSpec, step["wait_for"]
                )
                if wait_for is not None:
                    self.event((*here, "wait_for", "event"), wait_for.event)
                    self.condition((*here, "wait_for", "where"), wait_for.where)
                self.steps((*here, "on_event"), step.get("on_event"))
                self.steps((*here, "on_timeout"), step.get("on_timeout"))
            elif kind == "if":
                self.condition((*here, "if"), as_model(_CONDITION, step["if"]))
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
        self.templates.check(path, send)


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
