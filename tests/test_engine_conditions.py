"""Who qualifies: a trigger's `where`, a rule's `when`, counts, first time, first seen."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from tests.helpers.engine import (
    START,
    contactable,
    db_journeys,
    db_messages,
    identify,
    ingest,
    reasons,
    run,
    sends,
    track,
)
from tests.helpers.rules import RulePack


def where_rule(condition: dict[str, Any]) -> str:
    return f"""
    rules:
      - id: promo
        category: retention
        trigger: {{event: Order Completed, where: {json.dumps(condition)}}}
        entry: every_time
        steps:
          - send: {{channel: email, template: promo_a}}
    """


OPERATORS = [
    ({"property": "plan", "eq": "pro"}, {"plan": "pro"}, {"plan": "free"}),
    ({"property": "plan", "ne": "free"}, {"plan": "pro"}, {"plan": "free"}),
    ({"property": "total", "lt": 100}, {"total": 99.5}, {"total": 100}),
    ({"property": "total", "lte": 100}, {"total": 100}, {"total": 100.01}),
    ({"property": "total", "gt": 100}, {"total": 101}, {"total": 100}),
    ({"property": "total", "gte": 100}, {"total": 100}, {"total": 99}),
    ({"property": "total", "gt": 100}, {"total": "150"}, {"total": "50"}),
    ({"property": "country", "in": ["US", "CA"]}, {"country": "CA"}, {"country": "DE"}),
    ({"property": "country", "not_in": ["US", "CA"]}, {"country": "DE"}, {"country": "US"}),
    ({"property": "tags", "contains": "vip"}, {"tags": ["new", "vip"]}, {"tags": ["new"]}),
    ({"property": "coupon", "contains": "SPRING"}, {"coupon": "SPRING25"}, {"coupon": "FALL25"}),
    ({"property": "coupon", "exists": True}, {"coupon": "X"}, {"other": 1}),
    ({"property": "coupon", "exists": False}, {"other": 1}, {"coupon": "X"}),
    ({"property": "sku", "matches": "^BK-[0-9]+$"}, {"sku": "BK-12"}, {"sku": "TV-12"}),
    ({"property": "cart.total", "gt": 50}, {"cart": {"total": 60}}, {"cart": {"total": 10}}),
    ({"property": "items.0.sku", "eq": "A"}, {"items": [{"sku": "A"}]}, {"items": [{"sku": "B"}]}),
]


@pytest.mark.parametrize(("condition", "matching", "other"), OPERATORS)
def test_trigger_where_compares_event_properties(
    tmp_path: Path, condition: dict[str, Any], matching: dict[str, Any], other: dict[str, Any]
) -> None:
    rules = RulePack(tmp_path).rules(where_rule(condition)).load()
    result = run(
        rules,
        [
            *contactable(),
            track("Order Completed", "1h", **other),
            track("Order Completed", "2h", **matching),
        ],
    )
    assert sends(result) == [("promo", "email", "promo_a")]
    assert result.sends[0].at.hour == 12  # the matching event, not the other one
    assert reasons(result, "not_entered", "promo") == [
        "event 'Order Completed': the event does not match the trigger's where"
    ]


def when_rule(condition: dict[str, Any]) -> str:
    return f"""
    rules:
      - id: upsell
        category: retention
        trigger: {{event: Product Used}}
        when: {json.dumps(condition)}
        steps:
          - send: {{channel: email, template: promo_a}}
    """


TRAITS = [
    ({"trait": "plan", "eq": "pro"}, {"plan": "pro"}, {"plan": "free"}),
    ({"trait": "plan", "in": ["pro", "team"]}, {"plan": "team"}, {"plan": "free"}),
    ({"trait": "seats", "gte": 5}, {"seats": 5}, {"seats": 4}),
    ({"trait": "company.size", "lt": 50}, {"company": {"size": 10}}, {"company": {"size": 500}}),
    ({"trait": "beta", "exists": True}, {"beta": True}, {}),
    ({"trait": "name", "matches": "^A"}, {"name": "Ada"}, {"name": "Grace"}),
    ({"user": "timezone", "eq": "Asia/Shanghai"}, {"timezone": "Asia/Shanghai"}, {}),
]


@pytest.mark.parametrize(("condition", "matching", "other"), TRAITS)
def test_when_compares_user_traits_and_profile(
    tmp_path: Path, condition: dict[str, Any], matching: dict[str, Any], other: dict[str, Any]
) -> None:
    rules = RulePack(tmp_path).rules(when_rule(condition)).load()
    timeline = [identify(email="ada@example.com", **matching), track("Product Used", "1h")]
    assert sends(run(rules, timeline)) == [("upsell", "email", "promo_a")]

    result = run(rules, [identify(email="ada@example.com", **other), track("Product Used", "1h")])
    assert sends(result) == []
    assert reasons(result, "not_entered", "upsell") == [
        "event 'Product Used': the user does not meet the rule's when"
    ]


def test_count_within_only_counts_recent_events(tmp_path: Path) -> None:
    rules = (
        RulePack(tmp_path)
        .rules("""
        rules:
          - id: loyal
            category: retention
            trigger: {event: Order Completed}
            when: {count: {event: Order Completed, within: 30d}, gte: 3}
            steps:
              - send: {channel: email, template: thanks}
        """)
        .load()
    )
    result = run(
        rules,
        [
            *contactable(),
            track("Order Completed", "1d"),
            track("Order Completed", "40d"),  # the first is now out of the window
            track("Order Completed", "41d"),
            track("Order Completed", "42d"),  # three within 30 days
        ],
        run_for=dt.timedelta(days=1),
    )
    assert [(s.rule, s.at.date().isoformat()) for s in result.sends] == [("loyal", "2026-02-16")]
    assert len(reasons(result, "not_entered", "loyal")) == 3


def test_count_where_filters_the_counted_events(tmp_path: Path) -> None:
    rules = (
        RulePack(tmp_path)
        .rules("""
        rules:
          - id: big-spender
            category: retention
            trigger: {event: Order Completed}
            entry: every_time
            when:
              count: {event: Order Completed, where: {property: total, gte: 100}}
              eq: 2
            steps:
              - send: {channel: email, template: thanks}
        """)
        .load()
    )
    result = run(
        rules,
        [
            *contactable(),
            track("Order Completed", "1h", total=150),
            track("Order Completed", "2h", total=20),
            track("Order Completed", "3h", total=200),  # the second big one
            track("Order Completed", "4h", total=300),  # the third: no longer eq 2
        ],
    )
    assert [s.at.hour for s in result.sends] == [13]


def test_first_time_is_only_the_users_first_event_of_that_name(tmp_path: Path) -> None:
    rules = (
        RulePack(tmp_path)
        .policy("max_sends_per_event: 2")
        .rules("""
        rules:
          - id: first-order
            category: activation
            trigger: {event: Order Completed}
            entry: every_time
            when: {first_time: true}
            steps:
              - send: {channel: email, template: thanks}
          - id: repeat-order
            category: retention
            trigger: {event: Order Completed}
            entry: every_time
            when: {first_time: false}
            steps:
              - send: {channel: sms, template: thanks}
        """)
        .load()
    )
    result = run(
        rules,
        [*contactable(), track("Order Completed", "1h"), track("Order Completed", "2d")],
    )
    assert sends(result) == [("first-order", "email", "thanks"), ("repeat-order", "sms", "thanks")]
    assert result.sends[1].at.day == 7


@pytest.mark.parametrize(
    ("bound", "early", "late"),
    [("more_than: 7d", False, True), ("less_than: 7d", True, False)],
)
def test_first_seen_measures_time_since_the_user_was_first_seen(
    tmp_path: Path, bound: str, early: bool, late: bool
) -> None:
    rules = (
        RulePack(tmp_path)
        .rules(f"""
        rules:
          - id: tenure
            category: retention
            trigger: {{event: App Opened}}
            entry: every_time
            when: {{first_seen: {{{bound}}}}}
            steps:
              - send: {{channel: email, template: promo_a}}
        """)
        .load()
    )
    result = run(rules, [*contactable(), track("App Opened", "1d"), track("App Opened", "8d")])
    got = {s.at.day for s in result.sends}
    assert (6 in got, 13 in got) == (early, late)


def test_all_any_not_nest(tmp_path: Path) -> None:
    rules = (
        RulePack(tmp_path)
        .rules("""
        rules:
          - id: nested
            category: retention
            trigger: {event: Order Completed}
            entry: every_time
            when:
              all:
                - {trait: plan, eq: pro}
                - any:
                    - {property: total, gte: 100}
                    - {property: coupon, exists: true}
                - not: {property: test, eq: true}
            steps:
              - send: {channel: email, template: promo_a}
        """)
        .load()
    )
    result = run(
        rules,
        [
            *contactable(plan="pro"),
            track("Order Completed", "1h", total=150),  # all hold
            track("Order Completed", "2h", total=10),  # neither branch of any
            track("Order Completed", "3h", total=10, coupon="X"),  # the other branch of any
            track("Order Completed", "4h", total=150, test=True),  # the not fails
        ],
    )
    assert [s.at.hour for s in result.sends] == [11, 13]

    free = run(rules, [*contactable(plan="free"), track("Order Completed", "1h", total=150)])
    assert sends(free) == []


FIRST_ORDER = """
rules:
  - id: first-order
    category: activation
    trigger: {event: Order Completed}
    entry: every_time
    when: {first_time: true}
    steps:
      - send: {channel: email, template: thanks}
  - id: second-order
    category: retention
    trigger: {event: Order Completed}
    entry: every_time
    when: {count: {event: Order Completed, within: 1d}, eq: 2}
    steps:
      - send: {channel: sms, template: thanks}
"""


def test_history_is_as_of_each_event_when_a_job_processes_several(
    tmp_path: Path, engine: Engine
) -> None:
    """Events of concurrent requests are processed in one job: the first of two orders is
    still the user's first, and has a count of one, though the second is already stored."""
    index = RulePack(tmp_path).policy("max_sends_per_event: 2").rules(FIRST_ORDER).index()
    ingest(engine, index, [identify(email="ada@example.com", phone="+14155550100")], START)
    later = START + dt.timedelta(hours=1)
    first, second = ingest(
        engine,
        index,
        [
            {"event": "Order Completed", "timestamp": later.isoformat()},
            {
                "event": "Order Completed",
                "timestamp": (later + dt.timedelta(minutes=1)).isoformat(),
            },
        ],
        later + dt.timedelta(minutes=2),
    )
    journeys = {j.rule_id: j.trigger_event_id for j in db_journeys(engine)}
    assert journeys == {"first-order": first, "second-order": second}
    assert [(m.rule_id, m.channel) for m in db_messages(engine)] == [
        ("first-order", "email"),
        ("second-order", "sms"),
    ]
