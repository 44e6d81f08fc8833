"""Lifecycle stages: new -> activated -> engaged on events, at_risk -> churned with inactivity,
recalled on return; every change recorded and able to trigger rules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service.engine.loader import RuleSet
from service.kit.db import unit_of_work
from service.models import StageChange
from service.processing.simulate import Result, Simulation, read_timeline
from tests.helpers.engine import START, contactable, identify, reasons, run, sends, track
from tests.helpers.rules import RulePack


def with_history(
    rules: RuleSet, calls: list[dict[str, Any]], run_for: dt.timedelta = dt.timedelta(days=1)
) -> tuple[Result, list[tuple[str | None, str, dt.timedelta, str]]]:
    """The simulation's result and the recorded stage changes as (from, to, when, cause), when
    counted from START."""
    timeline = read_timeline(calls, "simulated-user", START)
    simulation = Simulation(rules)
    try:
        result = simulation.run(timeline, timeline[-1].at + run_for)
        with unit_of_work(simulation.engine) as uow:
            changes = uow.session.scalars(select(StageChange).order_by(StageChange.id))
            history = [(c.from_stage, c.to_stage, c.at - START, c.cause) for c in changes]
    finally:
        simulation.close()
    return result, history


def days(n: float) -> dt.timedelta:
    return dt.timedelta(days=n)


def test_events_move_a_user_from_new_to_activated_to_engaged(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).load()
    result, history = with_history(
        rules,
        [
            identify(email="a@example.com"),
            track("App Opened", "1d"),
            track("Product Used", "2d"),
            track("Product Used", "3d"),
            track("Product Used", "4d"),
        ],
    )
    assert history == [
        (None, "new", days(0), "first seen"),
        ("new", "activated", days(2), "activation event 'Product Used'"),
        ("activated", "engaged", days(4), "3x 'Product Used' within 1w"),
    ]
    assert result.stage == "engaged"


def test_engagement_counts_only_within_its_window(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).load()
    calls = [identify(), *(track("Product Used", f"{d}d") for d in (1, 9, 10))]
    result, _ = with_history(rules, calls)
    assert result.stage == "activated"
    result, history = with_history(rules, [*calls, track("Product Used", "11d")])
    assert result.stage == "engaged"
    assert history[-1][2] == days(11)


def test_inactivity_moves_to_at_risk_then_churned_and_a_return_recalls(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).load()
    result, history = with_history(
        rules,
        [identify(), track("Product Used", "1d"), track("App Opened", "50d")],
        run_for=days(1),
    )
    assert history == [
        (None, "new", days(0), "first seen"),
        ("new", "activated", days(1), "activation event 'Product Used'"),
        ("activated", "at_risk", days(15), "inactive for 2w"),
        ("at_risk", "churned", days(31), "inactive for 30d"),
        ("churned", "recalled", days(50), "came back: event 'App Opened'"),
    ]
    assert result.stage == "recalled"


def test_a_recalled_user_can_become_engaged_again(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).load()
    result, history = with_history(
        rules,
        [
            identify(),
            track("Product Used", "1d"),
            *(track("Product Used", f"{d}d") for d in (20, 21, 22)),
        ],
    )
    assert [h[1] for h in history] == ["new", "activated", "at_risk", "recalled", "engaged"]
    assert result.stage == "engaged"


def test_only_activity_keeps_a_user_from_churning(tmp_path: Path) -> None:
    lifecycle = """
    activation: {event: Product Used}
    engagement: {event: Product Used, at_least: 3, within: 7d}
    at_risk_after: 14d
    churned_after: 30d
    not_activity: [Password Reset]
    """
    rules = RulePack(tmp_path).lifecycle(lifecycle).load()
    result, history = with_history(
        rules,
        [
            identify(),
            track("Product Used", "1d"),
            track("Password Reset", "10d"),  # sent by the backend, not the user being active
            identify("12d", plan="pro"),
        ],
        run_for=days(5),
    )
    assert result.stage == "at_risk"
    assert history[-1][1:3] == ("at_risk", days(15))


STAGE_RULES = """
rules:
  - id: at-risk
    category: recall
    trigger: {stage_changed: {to: at_risk}}
    steps:
      - send: {channel: email, template: winback}
  - id: churned
    category: recall
    trigger: {event: lifecycle.stage_changed, where: {property: to, eq: churned}}
    steps:
      - send: {channel: email, template: reminder}
  - id: welcome-back
    category: recall
    trigger: {stage_changed: {from: churned, to: recalled}}
    steps:
      - send: {channel: email, template: welcome}
  - id: recalled-from-risk
    category: recall
    trigger: {stage_changed: {from: at_risk, to: recalled}}
    steps:
      - send: {channel: email, template: nudge}
"""


def test_stage_changes_trigger_rules(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).rules(STAGE_RULES).load()
    result = run(
        rules,
        [*contactable(), track("Product Used", "1d"), track("App Opened", "40d")],
        run_for=days(1),
    )
    assert [(s.rule, s.template, s.at - START) for s in result.sends] == [
        ("at-risk", "winback", days(15)),
        ("churned", "reminder", days(31)),
        ("welcome-back", "welcome", days(40)),
    ]
    assert reasons(result, "entered", "at-risk") == ["stage activated -> at_risk"]
    assert reasons(result, "entered", "churned") == ["stage at_risk -> churned"]
    assert reasons(result, "not_entered", "churned") == [
        f"stage {change}: the event does not match the trigger's where"
        for change in (
            "None -> new",
            "new -> activated",
            "activated -> at_risk",
            "churned -> recalled",
        )
    ]


def test_inactive_for_triggers_once_per_stretch_of_inactivity(tmp_path: Path) -> None:
    rules = (
        RulePack(tmp_path)
        .rules("""
        rules:
          - id: miss-you
            category: retention
            trigger: {inactive_for: 5d}
            entry: every_time
            steps:
              - send: {channel: email, template: nudge}
        """)
        .load()
    )
    result = run(
        rules,
        [*contactable(), track("App Opened", "1h"), track("App Opened", "20d")],
        run_for=days(10),
    )
    assert [s.at - START for s in result.sends] == [
        dt.timedelta(days=5, hours=1),
        days(25),
    ]
    assert reasons(result, "entered", "miss-you") == ["inactive for 5d"] * 2


def test_without_activity_a_user_never_goes_at_risk(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).load()
    result = run(rules, [identify(email="a@example.com")], run_for=days(60))
    assert result.stage == "new"
    assert sends(result) == []
