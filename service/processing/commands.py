"""`lifeline rules simulate`, `lifeline rules test` and `lifeline users explain`."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from service.engine.loader import RuleSet, RulesInvalid, load_rules
from service.kit.durations import parse_duration
from service.processing.simulate import Outcome, TimelineError, simulate


def _load(directory: Path) -> RuleSet | None:
    try:
        return load_rules(directory)
    except RulesInvalid as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(
            f"{len(exc.errors)} errors in {directory}: fix them first (lifeline rules check)",
            file=sys.stderr,
        )
        return None


def format_outcome(o: Outcome) -> str:
    what = o.outcome.upper()
    if o.is_send:
        what = "SEND" if o.outcome == "queued" else "DEFER"
    rule = f"{o.rule}@{o.rule_version}" if o.rule else "-"
    line = f"{o.at:%Y-%m-%d %H:%M} UTC  {what:<11} {rule:<34} {o.reason}"
    if o.outcome == "deferred" and o.send_at:
        line += f" (goes out {o.send_at:%Y-%m-%d %H:%M} UTC)"
    return line


def simulate_command(
    directory: Path, events_file: str, user_id: str, start: str | None, run_for: str, as_json: bool
) -> int:
    ruleset = _load(directory)
    if ruleset is None:
        return 1
    try:
        begin = dt.datetime.fromisoformat(start.replace("Z", "+00:00")) if start else None
        if begin is not None and begin.tzinfo is None:
            begin = begin.replace(tzinfo=dt.UTC)
        window = parse_duration(run_for)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    calls: list[dict[str, Any]] = []
    stream = sys.stdin if events_file == "-" else open(events_file, encoding="utf-8")  # noqa: SIM115
    with stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                calls.append(json.loads(line))
            except json.JSONDecodeError as exc:
                print(f"{events_file}:{number}: not JSON: {exc.msg}", file=sys.stderr)
                return 1
    try:
        result = simulate(ruleset, calls, user_id=user_id, start=begin, run_for=window)
    except TimelineError as exc:
        print(f"{events_file}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        for o in result.outcomes:
            print(
                json.dumps(
                    {
                        "at": o.at.isoformat(),
                        "outcome": o.outcome,
                        "rule": o.rule,
                        "ruleVersion": o.rule_version,
                        "reason": o.reason,
                        "channel": o.channel,
                        "template": o.template,
                        "sendAt": o.send_at.isoformat() if o.send_at else None,
                    }
                )
            )
        return 0
    print(f"rules version {ruleset.version[:12]}; user {user_id}; nothing is sent\n")
    for o in result.outcomes:
        print(format_outcome(o))
    sends = len(result.sends)
    print(
        f"\n{sends} message{'' if sends == 1 else 's'} would be sent; final stage: "
        f"{result.stage or '-'}"
    )
    return 0


def test_command(directory: Path) -> int:
    from service.processing.ruletests import load_tests, run_test

    ruleset = _load(directory)
    if ruleset is None:
        return 1
    tests, errors = load_tests(directory / "tests")
    for error in errors:
        print(error)
    failed = 0
    for file, test in tests:
        outcome = run_test(ruleset, test, file)
        if outcome.passed:
            print(f"PASS {file}: {test.name}")
            continue
        failed += 1
        print(f"FAIL {file}: {test.name}")
        for failure in outcome.failures:
            print("  " + failure.rstrip().replace("\n", "\n  "))
    passed = len(tests) - failed
    print(f"{passed} passed, {failed + len(errors)} failed")
    return 1 if failed or errors or not tests else 0


def explain(session: Any, user_id: str, limit: int) -> int:
    from sqlalchemy import select

    from service.models import Decision, User

    user = session.scalar(select(User).where(User.user_id == user_id))
    if user is None:
        print(f"no user {user_id!r}", file=sys.stderr)
        return 1
    rows = list(
        session.scalars(
            select(Decision)
            .where(Decision.profile_id == user.id)
            .order_by(Decision.id.desc())
            .limit(limit)
        )
    )
    print(
        f"user {user_id}: stage {user.stage or '-'}; "
        f"the {len(rows)} most recent decisions, oldest first"
    )
    for d in reversed(rows):
        rule = f"{d.rule_id}@{d.rule_version}" if d.rule_id else "-"
        print(f"{d.at:%Y-%m-%d %H:%M} UTC  {d.outcome.upper():<11} {rule:<34} {d.reason}")
    return 0
