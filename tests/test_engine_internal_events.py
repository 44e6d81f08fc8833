"""Lifeline's own events in journeys (lifecycle.stage_changed as goal, exit or awaited
event), the per-event send budget, and scheduled (cron) rules in the user's timezone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.helpers.engine import START, contactable, identify, of, run, sends, track
from tests.helpers.rules import RulePack

STAGE_EVENTS = """
rules:
  - id: goal-on-stage
    category: activation
    trigger: {event: Signed Up}
    goal: {event: lifecycle.stage_changed, within: 7d, where: {property: to, eq: activated}}
    steps:
      - wait: 3d
      - send: {channel: email, template: nudge}
  - id: exit-on-stage
    category: activation
    trigger: {event: Signed Up}
    exit_on: [lifecycle.stage_changed]
    steps:
      - wait: 3d
      - send: {channel: email, template: reminder}
  - id: wait-for-stage
    category: activation
    trigger: {event: Signed Up}
    steps:
      - wait_for:
          {event: lifecycle.stage_changed, timeout: 3d, where: {property: to, eq: activated}}
        on_event: [{send: {channel: email, template: thanks}}]
        on_timeout: [{send: {channel: email, template: winback}}]
"""


def test_stage_changes_answer_goals_exits_and_waits(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).rules(STAGE_EVENTS).load()
    result = run(rules, [*contactable(), track("Signed Up", "1m"), track("Product Used", "1d")])

    assert sends(result) == [("wait-for-stage", "email", "thanks")]
    [thanks] = result.sends
    assert thanks.at == START + dt.timedelta(days=1)
    assert [o.rule for o in of(result, "converted")] == ["goal-on-stage"]
    ended = {o.rule: o.reason for o in of(result, "ended")}
    assert ended["exit-on-stage"] == "exit_on 'lifecycle.stage_changed'"
    assert ended["goal-on-stage"] == "goal reached"


def test_without_the_stage_change_the_waits_run_out(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).rules(STAGE_EVENTS).load()
    result = run(rules, [*contactable(), track("Signed Up", "1m")], run_for=dt.timedelta(days=5))

    assert sorted(sends(result)) == [
        ("exit-on-stage", "email", "reminder"),
        ("goal-on-stage", "email", "nudge"),
        ("wait-for-stage", "email", "winback"),
    ]


COMPETING = """
rules:
  - id: sms-first
    category: activation
    priority: 10
    trigger: {event: Signed Up}
    steps:
      - send: {channel: sms, template: welcome}
  - id: email-second
    category: activation
    priority: 1
    trigger: {event: Signed Up}
    steps:
      - send: {channel: email, template: welcome}
"""


def test_a_rule_that_could_not_send_leaves_the_budget_to_the_next(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).policy("{max_sends_per_event: 1}").rules(COMPETING).load()

    no_phone = run(rules, [identify(email="a@example.com"), track("Signed Up", "1m")])
    assert sends(no_phone) == [("email-second", "email", "welcome")]
    assert of(no_phone, "skipped", "sms-first")

    reachable = run(rules, [*contactable(), track("Signed Up", "1m")])
    assert sends(reachable) == [("sms-first", "sms", "welcome")]
    [refusal] = of(reachable, "not_entered", "email-second")
    assert "max_sends_per_event (1)" in refusal.reason


DIGEST = """
rules:
  - id: monday-digest
    category: retention
    trigger: {schedule: {cron: "0 9 * * MON"}}
    when: {user: stage, in: [activated, engaged]}
    entry: every_time
    steps:
      - send: {channel: email, template: thanks}
"""


def test_a_schedule_fires_at_the_users_local_time_only_for_who_qualifies(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).rules(DIGEST).load()
    # Monday 2026-01-05 10:00 UTC is 19:00 in Tokyo: the first Monday 09:00 there is the 12th,
    # 00:00 UTC. The user is activated on Tuesday, so the 12th is their first digest.
    result = run(
        rules,
        [*contactable(timezone="Asia/Tokyo"), track("Product Used", "1d")],
        run_for=dt.timedelta(days=14),
    )

    assert [s.at for s in result.sends] == [
        dt.datetime(2026, 1, 12, 0, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 19, 0, 0, tzinfo=dt.UTC),
    ]


def test_a_schedule_skips_users_who_do_not_qualify(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).rules(DIGEST).load()
    result = run(rules, contactable(timezone="Europe/Berlin"), run_for=dt.timedelta(days=8))

    assert result.sends == []
    [refusal] = of(result, "not_entered", "monday-digest")
    assert refusal.at == dt.datetime(2026, 1, 12, 8, 0, tzinfo=dt.UTC)  # 09:00 in Berlin
    assert "does not meet the rule's when" in refusal.reason
