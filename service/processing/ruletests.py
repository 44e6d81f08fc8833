"""Rule tests: YAML files in rules/tests/ that say, for a user and their events, which
messages they get and what is skipped. `lifeline rules test` runs them on the simulator."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from service.engine import yamlsource
from service.engine.loader import RuleSet
from service.engine.staff_format import Channel
from service.kit.durations import format_duration
from service.kit.staff_format import Duration, Strict
from service.processing.simulate import Outcome, Result, TimelineError, simulate

DEFAULT_START = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)  # a Monday, 10:00 UTC


class Device(Strict):
    platform: Literal["ios", "android", "web"]
    token: str


class TestUser(Strict):
    user_id: str = Field(default="test-user", alias="userId")
    traits: dict[str, Any] = Field(default_factory=dict)
    devices: list[Device] = Field(default_factory=list)


class ExpectedSend(Strict):
    rule: str
    channel: Channel
    template: str
    at: Duration | Literal["0m"] | None = Field(
        default=None, description="when it goes out, from the start (quiet hours included)"
    )


class ExpectedDecision(Strict):
    rule: str | None = None
    outcome: str
    reason: str | None = Field(default=None, description="text the reason contains")


class Expect(Strict):
    sends: list[ExpectedSend] | None = Field(
        default=None, description="every message the user gets, in order (exactly these)"
    )
    decisions: list[ExpectedDecision] = Field(
        default_factory=list, description="decisions that must be among the user's"
    )
    stage: str | None = None
    conversions: list[str] | None = Field(default=None, description="rules whose goal is reached")


class RuleTest(Strict):
    name: str
    start: dt.datetime = DEFAULT_START
    user: TestUser = Field(default_factory=TestUser)
    events: list[dict[str, Any]] = Field(default_factory=list)
    run_for: Duration = dt.timedelta(days=30)
    expect: Expect


class RuleTestFile(Strict):
    tests: list[RuleTest]


@dataclass
class TestOutcome:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def _offset(at: dt.datetime, start: dt.datetime) -> str:
    delta = at - start
    return format_duration(delta) if delta.total_seconds() > 0 else "0m"


def _describe(send: Outcome, start: dt.datetime) -> str:
    when = send.send_at or send.at
    return f"{send.rule}: {send.channel} {send.template!r} at +{_offset(when, start)}"


def check(test: RuleTest, result: Result) -> list[str]:
    failures = []
    expect = test.expect
    if expect.sends is not None:
        actual = [_describe(s, test.start) for s in result.sends]
        wanted = []
        for send, got in zip(expect.sends, result.sends + [None] * len(expect.sends), strict=False):
            if send.at is None and got is not None:  # no time given: accept the actual time
                when = got.send_at or got.at
                wanted.append(
                    f"{send.rule}: {send.channel} {send.template!r} at +{_offset(when, test.start)}"
                )
            else:
                at = dt.timedelta(0) if send.at in (None, "0m") else send.at
                assert isinstance(at, dt.timedelta)
                wanted.append(
                    f"{send.rule}: {send.channel} {send.template!r} at "
                    f"+{_offset(test.start + at, test.start)}"
                )
        if actual != wanted:
            failures.append(
                "sends differ:\n    expected:\n"
                + "".join(f"      {w}\n" for w in wanted or ["(none)"])
                + "    actual:\n"
                + "".join(f"      {a}\n" for a in actual or ["(none)"])
            )
    for wanted_decision in expect.decisions:
        if not any(
            (wanted_decision.rule is None or o.rule == wanted_decision.rule)
            and o.outcome == wanted_decision.outcome
            and (wanted_decision.reason is None or wanted_decision.reason in o.reason)
            for o in result.outcomes
        ):
            failures.append(
                f"no decision {wanted_decision.outcome!r}"
                + (f" for {wanted_decision.rule}" if wanted_decision.rule else "")
                + (
                    f" with reason containing {wanted_decision.reason!r}"
                    if wanted_decision.reason
                    else ""
                )
            )
    if expect.stage is not None and result.stage != expect.stage:
        failures.append(f"stage: expected {expect.stage}, got {result.stage}")
    if expect.conversions is not None:
        converted = sorted({o.rule for o in result.outcomes if o.outcome == "converted" and o.rule})
        if converted != sorted(expect.conversions):
            failures.append(f"conversions: expected {sorted(expect.conversions)}, got {converted}")
    return failures


def run_test(ruleset: RuleSet, test: RuleTest, file: str) -> TestOutcome:
    calls: list[dict[str, Any]] = [
        {"type": "identify", "at": "0m", "userId": test.user.user_id, "traits": test.user.traits}
    ]
    calls += [
        {"type": "device", "at": "0m", "userId": test.user.user_id, **d.model_dump()}
        for d in test.user.devices
    ]
    calls += [{"userId": test.user.user_id, **event} for event in test.events]
    try:
        result = simulate(
            ruleset, calls, user_id=test.user.user_id, start=test.start, run_for=test.run_for
        )
    except TimelineError as exc:
        return TestOutcome(file, test.name, [f"events: {exc}"])
    return TestOutcome(file, test.name, check(test, result))


def load_tests(directory: Path) -> tuple[list[tuple[str, RuleTest]], list[str]]:
    """(tests with their file, errors as file:line:column: message)."""
    tests: list[tuple[str, RuleTest]] = []
    errors: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            doc = yamlsource.load(path)
            parsed = RuleTestFile.model_validate(doc.data)
        except yamlsource.YamlError as exc:
            errors.append(str(exc))
            continue
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                where = doc.locate(tuple(err["loc"]))
                field_path = ".".join(str(p) for p in err["loc"])
                errors.append(f"{where}: {field_path}: {err['msg']}")
            continue
        tests += [(str(path), test) for test in parsed.tests]
    return tests, errors
