"""Loading a rules folder: everything is checked and every problem reported, or nothing loads.

Operations staff edit these files, so each problem names file:line:column of the offending key
or value and says what was expected in their words. A folder with any problem raises
RulesInvalid: callers keep the last good RuleSet live.

The pieces: rules_folder reads and validates each file, reference_checks and template_checks
check what a rule names against the rest of the folder, schema_errors words pydantic's errors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from service.engine import templates
from service.engine.policy import Policy
from service.engine.reference_checks import EventNames, RuleCheck, check_lifecycle_events
from service.engine.rules_folder import (
    EVENTS_FILE,
    LIFECYCLE_FILE,
    POLICY_FILE,
    TEMPLATES_DIR,
    Folder,
    RuleError,
    as_model,
)
from service.engine.staff_format import EventCatalog, Rule
from service.engine.template_checks import Found, load_templates
from service.engine.yamlsource import Document
from service.kit.events import INTERNAL_EVENTS
from service.lifecycle.staff_format import Lifecycle


class RulesInvalid(Exception):
    def __init__(self, errors: Iterable[RuleError]):
        self.errors = sorted(set(errors))
        count = len(self.errors)
        super().__init__(
            f"{count} error{'s' if count != 1 else ''} in the rules:\n"
            + "\n".join(str(e) for e in self.errors)
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
    folder = Folder(directory)
    ruleset = _load(folder)
    if folder.errors or ruleset is None:
        raise RulesInvalid(folder.errors)
    return ruleset


def load_template_folder(directory: Path) -> dict[str, templates.Template]:
    folder = Folder(directory.parent)
    found = load_templates(folder, directory)
    if folder.errors:
        raise RulesInvalid(folder.errors)
    return _valid_templates(found)


def canonical_json(value: BaseModel | Any) -> str:
    data = value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def rule_version(rule: Rule) -> str:
    return hashlib.sha256(canonical_json(rule).encode()).hexdigest()[:12]


def _load(folder: Folder) -> RuleSet | None:
    """The rule set, or None when the folder has problems (they are in `folder.errors`)."""
    if not folder.directory.is_dir():
        folder.file_error(folder.directory, "no such rules folder")
        return None
    lifecycle = folder.load_special(LIFECYCLE_FILE, Lifecycle)
    policy = folder.load_special(POLICY_FILE, Policy)
    catalog = folder.load_special(EVENTS_FILE, EventCatalog)
    found = load_templates(folder, folder.directory / TEMPLATES_DIR)
    events = None
    if catalog is not None:
        events = EventNames(folder, catalog[0], catalog[1], folder.display(EVENTS_FILE))
    if lifecycle is not None and events is not None:
        check_lifecycle_events(*lifecycle, events)
    stages = lifecycle[0].names() if lifecycle is not None else None
    rules = _checked_rules(folder, found, stages, events)
    if folder.errors or lifecycle is None or policy is None or catalog is None:
        return None
    return _ruleset(rules, lifecycle[0], policy[0], catalog[0], found)


def _checked_rules(
    folder: Folder, found: Found, stages: list[str] | None, events: EventNames | None
) -> list[tuple[Rule, Document]]:
    """Every rule of the folder's rule files that passed its schema, each checked against the
    rest of the folder."""
    rules: list[tuple[Rule, Document]] = []
    for raw, doc, path in folder.rule_items():
        RuleCheck(folder, raw, doc, path, found, stages, events).run()
        rule = as_model(Rule, raw)
        if rule is not None:
            rules.append((rule, doc))
    return rules


def _ruleset(
    rules: list[tuple[Rule, Document]],
    lifecycle: Lifecycle,
    policy: Policy,
    catalog: EventCatalog,
    found: Found,
) -> RuleSet:
    loaded = [LoadedRule(rule, doc.file, rule_version(rule)) for rule, doc in rules if rule.enabled]
    valid = _valid_templates(found)
    known = frozenset(catalog.events) | frozenset(INTERNAL_EVENTS)
    everything = {
        "rules": [
            # The file by name only: the same folder has the same version wherever it is.
            {"file": Path(doc.file).name, "rule": rule.model_dump(mode="json", by_alias=True)}
            for rule, doc in sorted(rules, key=lambda r: r[0].id)
        ],
        "lifecycle": lifecycle.model_dump(mode="json", by_alias=True),
        "policy": policy.model_dump(mode="json", by_alias=True),
        "templates": {n: t.model_dump(mode="json", by_alias=True) for n, t in valid.items()},
        "events": sorted(known),
    }
    version = hashlib.sha256(canonical_json(everything).encode()).hexdigest()
    return RuleSet(loaded, lifecycle, policy, valid, known, version)


def _valid_templates(found: Found) -> dict[str, templates.Template]:
    return {name: t for name, (t, _) in found.items() if t is not None}
