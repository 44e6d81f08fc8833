"""Editing the rules while journeys are under way: a journey finishes on the version it entered
with, new entries get the new version, and a removed rule's journeys end quietly.

These run the engine as the worker and scheduler do (process_events, run_journey) on both
databases, with rule indexes built by hand in place of the hot reload and an explicit clock.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine

from service.engine import staff_format, versions
from service.engine.index import RuleIndex
from service.engine.loader import rule_version
from service.kit.db import unit_of_work
from service.models import RuleVersion
from tests.helpers.engine import (
    START,
    db_decisions,
    db_journeys,
    db_messages,
    identify,
    index_of,
    ingest,
    run_due_journeys,
    track,
)
from tests.helpers.rules import RulePack, version_of

DRIP = """
rules:
  - id: drip
    category: activation
    trigger: {event: Signed Up}
    steps:
      - send: {channel: email, template: welcome}
      - wait: 1d
      - send: {channel: email, template: nudge}
  - id: other
    category: retention
    trigger: {event: Order Completed}
    steps:
      - send: {channel: email, template: thanks}
"""


def sign_up(engine: Engine, index: RuleIndex, user_id: str, at: dt.datetime) -> None:
    calls = [identify(email=f"{user_id}@example.com"), track("Signed Up")]
    ingest(engine, index, calls, at, user_id=user_id)


def test_a_journey_finishes_on_its_version_while_new_entries_get_the_new_one(
    tmp_path: Path, engine: Engine
) -> None:
    folder = tmp_path / "rules"
    old_rules = RulePack(folder).rules(DRIP).load()
    old = index_of(old_rules)
    sign_up(engine, old, "u-1", START)
    versions._versions.clear()  # as in a restarted worker: the old version comes from the database

    new_rules = RulePack(folder).rules(DRIP.replace("template: nudge", "template: reminder")).load()
    new = index_of(new_rules)
    old_version = version_of(old_rules, "drip")
    new_version = version_of(new_rules, "drip")
    assert old_version != new_version

    sign_up(engine, new, "u-2", START + dt.timedelta(hours=1))
    assert run_due_journeys(engine, new, START + dt.timedelta(days=2)) == 2

    sent = [(m.profile_id, m.template, m.rule_version) for m in db_messages(engine)]
    u1, u2 = (j.profile_id for j in db_journeys(engine))
    assert sent == [
        (u1, "welcome", old_version),
        (u2, "welcome", new_version),
        (u1, "nudge", old_version),  # the version u-1 entered with
        (u2, "reminder", new_version),
    ]
    assert [j.end_reason for j in db_journeys(engine)] == ["completed", "completed"]


def test_a_removed_rule_ends_its_journeys_without_sending_more(
    tmp_path: Path, engine: Engine
) -> None:
    folder = tmp_path / "rules"
    old = RulePack(folder).rules(DRIP).index()
    sign_up(engine, old, "u-1", START)
    sign_up(engine, old, "u-2", START)

    new = index_of(
        RulePack(folder)
        .rules("""
            rules:
              - id: other
                category: retention
                trigger: {event: Order Completed}
                steps:
                  - send: {channel: email, template: thanks}
            """)
        .load()
    )
    # u-2 does something before the wait is over; u-1's journey is woken by the scheduler.
    ingest(engine, new, [track("App Opened")], START + dt.timedelta(hours=2), user_id="u-2")
    run_due_journeys(engine, new, START + dt.timedelta(days=2))

    assert [m.template for m in db_messages(engine)] == ["welcome", "welcome"]
    assert [(j.end_reason, j.wake_at) for j in db_journeys(engine)] == [
        ("rule removed from the rule set", None),
        ("rule removed from the rule set", None),
    ]
    ended = [d for d in db_decisions(engine) if d.outcome == "ended"]
    assert [d.reason for d in ended] == ["rule removed from the rule set"] * 2
    assert run_due_journeys(engine, new, START + dt.timedelta(days=30)) == 0


EVERYTHING = """
rules:
  - id: everything
    category: retention
    trigger: {event: Checkout Started, where: {property: total, gte: 10}}
    when:
      all:
        - {trait: plan, in: [free, pro]}
        - not: {count: {event: Order Completed, within: 1d}, gt: 5}
        - any: [{first_time: true}, {first_seen: {more_than: 1h}}]
    entry: {once_per: 2d}
    key: cart_id
    priority: 3
    holdout: 0%
    variants: [{id: a, weight: 1}, {id: b, weight: 2}]
    goal: {event: Order Completed, within: 7d, where: {property: cart_id, exists: true}}
    exit_on: [Unsubscribed]
    steps:
      - wait: {until: "09:00"}
      - wait_for: {event: Order Completed, timeout: 4h, match: cart_id}
        on_event:
          - exit
        on_timeout:
          - if: {user: stage, ne: churned}
            then:
              - send: {channel: push, template: {a: promo_a, b: promo_b}, fallback: [sms, email]}
            else:
              - exit: gone
      - wait: 1d
      - send: {channel: email, template: reminder, track: true}
"""


def test_the_stored_version_is_the_rule_exactly(tmp_path: Path, engine: Engine) -> None:
    """A journey resumes from the stored definition: it must be the very rule it entered."""
    rules = RulePack(tmp_path / "rules").rules(EVERYTHING).load()
    index = index_of(rules)
    ingest(
        engine,
        index,
        [identify(plan="pro"), track("Checkout Started", cart_id="c1", total=20)],
        START,
    )
    [journey] = db_journeys(engine)
    with unit_of_work(engine) as uow:
        [stored] = uow.session.scalars(select(RuleVersion))
        definition = stored.definition
    assert (stored.rule_id, stored.version) == ("everything", version_of(rules, "everything"))
    assert rule_version(staff_format.Rule.model_validate(definition)) == stored.version
    assert journey.rule_version == stored.version
