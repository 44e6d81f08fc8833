"""Rules folders for tests: a builder that writes a complete folder around the rules a test is
about, the rules several tests share, and a copy of tests/fixtures/rules_minimal to break one
file at a time."""

from __future__ import annotations

import os
import shutil
import textwrap
import time
from pathlib import Path
from typing import Self

import pytest

from service.engine.index import RuleIndex
from service.engine.loader import RuleSet, RulesInvalid, load_rules
from service.engine.registry import SETTLE_SECONDS

MINIMAL = Path(__file__).parents[1] / "fixtures" / "rules_minimal"

LIFECYCLE = """
activation: {event: Product Used}
engagement: {event: Product Used, at_least: 3, within: 7d}
at_risk_after: 14d
churned_after: 30d
"""

EVENTS = (
    "Signed Up",
    "Product Used",
    "App Opened",
    "Checkout Started",
    "Order Completed",
    "Plan Changed",
    "Password Reset",
    "Unsubscribed",
)

TEMPLATES = ("welcome", "nudge", "reminder", "winback", "thanks", "receipt", "promo_a", "promo_b")

QUIET_NIGHTS = "quiet_hours: {start: '21:00', end: '08:00'}"

# The rule most delivery tests need a message from: an email as soon as someone signs up.
WELCOME = """
rules:
  - id: welcome
    category: activation
    trigger: {event: Signed Up}
    steps:
      - send: {channel: email, template: welcome}
"""


class RulePack:
    """A complete rules folder, built up by a test and written at `folder`.

    What a test does not set is neutral: the lifecycle is LIFECYCLE, the policy has no caps
    and no quiet hours, the event catalog is EVENTS, and each of TEMPLATES has an email, sms
    and push section whose text is the template's name.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lifecycle = LIFECYCLE
        self._policy = "{}"
        self._events = list(EVENTS)
        self._rules: list[str] = []
        self._templates = {name: neutral_template(name) for name in TEMPLATES}
        self._settled = False

    def lifecycle(self, text: str) -> Self:
        self._lifecycle = text
        return self

    def policy(self, text: str) -> Self:
        self._policy = text
        return self

    def events(self, *names: str) -> Self:
        """More event names for the catalog."""
        self._events += names
        return self

    def rules(self, text: str) -> Self:
        """The rules of a `rules:` document; those of several calls go into one rules.yaml."""
        self._rules.append(text)
        return self

    def template(self, name: str, text: str) -> Self:
        self._templates[name] = text
        return self

    def settled(self) -> Self:
        """Write every file as saved a while ago, so a rule registry loads it at once."""
        self._settled = True
        return self

    def write(self) -> Path:
        files = {
            "lifecycle.yaml": self._lifecycle,
            "policy.yaml": self._policy,
            "events.yaml": "events:\n" + "".join(f"  - {e}\n" for e in self._events),
            "rules.yaml": rules_document(self._rules),
        }
        files |= {f"templates/{name}.yaml": text for name, text in self._templates.items()}
        for name, text in files.items():
            path = write(self.folder, name, text)
            if self._settled:
                settled(path)
        return self.folder

    def load(self) -> RuleSet:
        return load_rules(self.write())

    def index(self) -> RuleIndex:
        return RuleIndex.from_ruleset(self.load())


def neutral_template(name: str) -> str:
    return f"""
    email: {{subject: "{name}", html: "<p>{name}</p>"}}
    sms: {{body: "{name}"}}
    push: {{title: "{name}", body: "{name}"}}
    """


def rules_document(documents: list[str]) -> str:
    """One `rules:` document holding the rules of each of `documents` (one is kept as it is,
    so that the lines a test expects in an error are its own)."""
    if not documents:
        return "rules: []\n"
    if len(documents) == 1:
        return documents[0]
    items = []
    for document in documents:
        header, _, body = textwrap.dedent(document).lstrip("\n").partition("\n")
        assert header == "rules:", f"not a rules document: {document!r}"
        items.append(body)
    return "rules:\n" + "".join(items)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def settled(path: Path) -> None:
    """Age a just-written file past the registry's settling time, as if saved a while ago."""
    past = time.time() - SETTLE_SECONDS - 1
    os.utime(path, (past, past))


def version_of(rules: RuleSet, rule_id: str) -> str:
    loaded = rules.rule(rule_id)
    assert loaded is not None, rule_id
    return loaded.version


# --- The minimal folder, broken one file at a time ------------------------------------------


def copy_minimal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The minimal folder as ./rules in a fresh working directory, so errors name rules/..."""
    shutil.copytree(MINIMAL, tmp_path / "rules")
    monkeypatch.chdir(tmp_path)
    return Path("rules")


def errors(folder: Path) -> list[str]:
    with pytest.raises(RulesInvalid) as raised:
        load_rules(folder)
    return [str(e) for e in raised.value.errors]
