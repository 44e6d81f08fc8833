"""The live rule set, compiled and indexed by trigger, so an event only meets rules that can
apply to it."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.engine import conditions, program, staff_format
from service.engine.policy import Policy
from service.engine.templates import Template
from service.kit.events import STAGE_CHANGED
from service.lifecycle.staff_format import Lifecycle

if TYPE_CHECKING:
    from service.engine.loader import RuleSet


@dataclass(frozen=True)
class CompiledRule:
    rule: staff_format.Rule
    version: str
    program: list[program.Instruction]
    where: conditions.Predicate | None = None  # the trigger's conditions on its event
    when: conditions.Predicate | None = None  # who qualifies

    @property
    def id(self) -> str:
        return self.rule.id

    def sends_at_once(self) -> bool:
        """Whether entering may send before any wait: it then counts towards the per-event
        limit on sending rules (max_sends_per_event)."""
        seen: set[int] = set()
        todo = [0]
        while todo:
            pc = todo.pop()
            if pc in seen or pc >= len(self.program):
                continue
            seen.add(pc)
            instruction = self.program[pc]
            if isinstance(instruction, program.Send):
                return True
            if isinstance(instruction, program.If):
                todo += [pc + 1, instruction.otherwise]
            elif isinstance(instruction, program.Jump):
                todo.append(instruction.target)
        return False


def compile_rule(rule: staff_format.Rule, version: str) -> CompiledRule:
    where, when = rule.trigger.where, rule.when
    return CompiledRule(
        rule,
        version,
        program.compile_steps(list(rule.steps)),
        where=conditions.compile_condition(where) if where is not None else None,
        when=conditions.compile_condition(when) if when is not None else None,
    )


@dataclass
class RuleIndex:
    lifecycle: Lifecycle
    policy: Policy
    version: str = ""
    rules: dict[str, CompiledRule] = field(default_factory=dict)
    by_event: dict[str, list[CompiledRule]] = field(default_factory=lambda: defaultdict(list))
    on_stage_change: list[CompiledRule] = field(default_factory=list)
    on_inactivity: list[CompiledRule] = field(default_factory=list)
    on_schedule: list[CompiledRule] = field(default_factory=list)
    templates: dict[str, Template] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        rules: list[tuple[staff_format.Rule, str]],
        lifecycle: Lifecycle,
        policy: Policy,
        version: str = "",
        templates: dict[str, Template] | None = None,
    ) -> RuleIndex:
        index = cls(lifecycle=lifecycle, policy=policy, version=version, templates=templates or {})
        for rule, rule_version in rules:
            if not rule.enabled:
                continue
            compiled = compile_rule(rule, rule_version)
            index.rules[rule.id] = compiled
            trigger = rule.trigger
            if trigger.event is not None:
                index.by_event[trigger.event].append(compiled)
            elif trigger.stage_changed is not None:
                index.on_stage_change.append(compiled)
            elif trigger.inactive_for is not None:
                index.on_inactivity.append(compiled)
            else:
                index.on_schedule.append(compiled)
        for group in (
            *index.by_event.values(),
            index.on_stage_change,
            index.on_inactivity,
            index.on_schedule,
        ):
            group.sort(key=lambda c: (-c.rule.priority, c.id))
        return index

    @classmethod
    def from_ruleset(cls, ruleset: RuleSet) -> RuleIndex:
        """The index of a loaded rules folder."""
        return cls.build(
            [(r.rule, r.version) for r in ruleset.rules],
            ruleset.lifecycle,
            ruleset.policy,
            ruleset.version,
            ruleset.templates,
        )

    def thresholds(self) -> list[dt.timedelta]:
        """Every inactivity duration something acts on."""
        found = {*self.lifecycle.thresholds}
        found.update(
            c.rule.trigger.inactive_for for c in self.on_inactivity if c.rule.trigger.inactive_for
        )
        return sorted(found)

    def triggered_by_event(self, name: str) -> list[CompiledRule]:
        return self.by_event.get(name, [])

    def triggered_by_stage_change(self, from_stage: str | None, to: str) -> list[CompiledRule]:
        matched = [
            c
            for c in self.on_stage_change
            if _stage_matches(c.rule.trigger.stage_changed, from_stage, to)
        ]
        return sorted(
            [*matched, *self.triggered_by_event(STAGE_CHANGED)],
            key=lambda c: (-c.rule.priority, c.id),
        )


def _stage_matches(spec: staff_format.StageChange | None, from_stage: str | None, to: str) -> bool:
    assert spec is not None
    return (spec.to is None or spec.to == to) and (spec.from_ is None or spec.from_ == from_stage)
