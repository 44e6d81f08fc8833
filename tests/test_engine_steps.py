"""A journey's steps: sends with fallbacks, waits, waiting for an event, branches, exits,
goals and exit_on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.helpers.engine import (
    START,
    contactable,
    device,
    identify,
    of,
    reasons,
    run,
    sends,
    track,
)
from tests.helpers.rules import RulePack

FALLBACK = """
rules:
  - id: hello
    category: activation
    trigger: {event: Signed Up}
    steps:
      - send: {channel: push, template: welcome, fallback: [sms, email]}
"""


@pytest.mark.parametrize(
    ("profile", "channel", "why"),
    [
        ([identify(email="a@example.com", phone="+14155550100"), device()], "push", ""),
        ([identify(email="a@example.com", phone="+14155550100")], "sms", "push: no push device"),
        (
            [identify(email="a@example.com")],
            "email",
            "push: no push device; sms: no phone number",
        ),
    ],
)
def test_send_falls_back_through_channels_in_order(
    tmp_path: Path, profile: list[dict[str, object]], channel: str, why: str
) -> None:
    result = run(RulePack(tmp_path).rules(FALLBACK).load(), [*profile, track("Signed Up", "1h")])
    assert sends(result) == [("hello", channel, "welcome")]
    expected = f"{channel} 'welcome'" + (f" (fallback: {why})" if why else "")
    assert reasons(result, "queued", "hello") == [expected]


def test_send_with_no_usable_channel_is_skipped_with_every_reason(tmp_path: Path) -> None:
    result = run(
        RulePack(tmp_path).rules(FALLBACK).load(), [identify(name="Ada"), track("Signed Up", "1h")]
    )
    assert sends(result) == []
    assert reasons(result, "skipped", "hello") == [
        "push 'welcome': push: no push device; sms: no phone number; email: no email address"
    ]


def test_wait_for_a_duration(tmp_path: Path) -> None:
    rules = (
        RulePack(tmp_path)
        .rules("""
        rules:
          - id: drip
            category: activation
            trigger: {event: Signed Up}
            steps:
              - send: {channel: email, template: welcome}
              - wait: 2d
              - send: {channel: email, template: nudge}
              - wait: {for: 30m}
              - send: {channel: email, template: reminder}
        """)
        .load()
    )
    result = run(rules, [*contactable(), track("Signed Up", "1h")])
    assert [(s.template, s.at - START) for s in result.sends] == [
        ("welcome", dt.timedelta(hours=1)),
        ("nudge", dt.timedelta(days=2, hours=1)),
        ("reminder", dt.timedelta(days=2, hours=1, minutes=30)),
    ]
    assert reasons(result, "ended", "drip") == ["completed"]


UNTIL_NINE = """
rules:
  - id: morning
    category: activation
    trigger: {event: Signed Up}
    steps:
      - wait: {until: "09:00"}
      - send: {channel: email, template: welcome}
"""


@pytest.mark.parametrize(
    ("timezone", "signed_up", "sent"),
    [
        # 05:00 in New York: later that morning
        ("America/New_York", "2026-01-05T10:00:00Z", "2026-01-05T14:00:00Z"),
        # 19:00 in Shanghai: the next morning
        ("Asia/Shanghai", "2026-01-05T11:00:00Z", "2026-01-06T01:00:00Z"),
        # New York moves to daylight time on 2026-03-08: 09:00 EDT is 13:00 UTC
        ("America/New_York", "2026-03-07T20:00:00Z", "2026-03-08T13:00:00Z"),
        # Berlin moves to summer time on 2026-03-29: 09:00 CEST is 07:00 UTC
        ("Europe/Berlin", "2026-03-28T12:00:00Z", "2026-03-29T07:00:00Z"),
        # and back on 2026-10-25: 09:00 CET is 08:00 UTC
        ("Europe/Berlin", "2026-10-24T12:00:00Z", "2026-10-25T08:00:00Z"),
    ],
)
def test_wait_until_a_local_time_of_day(
    tmp_path: Path, timezone: str, signed_up: str, sent: str
) -> None:
    rules = RulePack(tmp_path).rules(UNTIL_NINE).load()
    at = dt.datetime.fromisoformat(signed_up)
    result = run(
        rules,
        [identify(email="a@example.com", timezone=timezone), track("Signed Up", signed_up)],
        start=at,
    )
    assert [s.at for s in result.sends] == [dt.datetime.fromisoformat(sent)]


def test_wait_until_uses_the_policy_timezone_when_the_users_is_unknown(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).policy("default_timezone: Asia/Tokyo").rules(UNTIL_NINE).load()
    result = run(rules, [identify(email="a@example.com"), track("Signed Up", "1h")])
    # 11:00 UTC is 20:00 in Tokyo; 09:00 in Tokyo is 00:00 UTC
    assert [s.at for s in result.sends] == [dt.datetime(2026, 1, 6, 0, 0, tzinfo=dt.UTC)]


CART = """
rules:
  - id: cart
    category: retention
    trigger: {event: Checkout Started}
    key: cart_id
    entry: every_time
    steps:
      - wait_for: {event: Order Completed, timeout: 4h, match: cart_id}
        on_event:
          - send: {channel: email, template: thanks}
          - exit: bought
        on_timeout:
          - send: {channel: email, template: reminder}
      - send: {channel: email, template: promo_a}
"""


def test_wait_for_the_matching_event_takes_on_event(tmp_path: Path) -> None:
    result = run(
        RulePack(tmp_path).rules(CART).load(),
        [
            *contactable(),
            track("Checkout Started", "1h", cart_id="c1"),
            track("Order Completed", "2h", cart_id="c1"),
        ],
    )
    assert sends(result) == [("cart", "email", "thanks")]
    assert result.sends[0].at == START + dt.timedelta(hours=2)
    assert reasons(result, "event_came", "cart") == ["'Order Completed' came"]
    assert reasons(result, "ended", "cart") == ["exit: bought"]


def test_wait_for_ignores_another_key_and_times_out(tmp_path: Path) -> None:
    result = run(
        RulePack(tmp_path).rules(CART).load(),
        [
            *contactable(),
            track("Checkout Started", "1h", cart_id="c1"),
            track("Order Completed", "2h", cart_id="c2"),  # another cart
        ],
    )
    assert sends(result) == [("cart", "email", "reminder"), ("cart", "email", "promo_a")]
    assert result.sends[0].at == START + dt.timedelta(hours=5)
    assert reasons(result, "timed_out", "cart") == ["'Order Completed' did not come within 4h"]
    assert reasons(result, "ended", "cart") == ["completed"]


def test_if_then_else_branches_on_the_user_at_that_moment(tmp_path: Path) -> None:
    rules = (
        RulePack(tmp_path)
        .rules("""
        rules:
          - id: onboarding
            category: activation
            trigger: {event: Signed Up}
            steps:
              - wait: 2d
              - if: {user: stage, eq: new}
                then:
                  - send: {channel: email, template: nudge}
                else:
                  - send: {channel: email, template: promo_a}
              - send: {channel: email, template: reminder}
        """)
        .load()
    )
    idle = run(rules, [*contactable(), track("Signed Up", "1h")])
    assert [s.template for s in idle.sends] == ["nudge", "reminder"]

    active = run(rules, [*contactable(), track("Signed Up", "1h"), track("Product Used", "1d")])
    assert [s.template for s in active.sends] == ["promo_a", "reminder"]


def test_exit_step_ends_the_journey(tmp_path: Path) -> None:
    rules = (
        RulePack(tmp_path)
        .rules("""
        rules:
          - id: vip
            category: retention
            trigger: {event: Order Completed}
            steps:
              - if: {property: total, lt: 100}
                then:
                  - exit: small order
              - send: {channel: email, template: thanks}
        """)
        .load()
    )
    small = run(rules, [*contactable(), track("Order Completed", "1h", total=10)])
    assert sends(small) == []
    assert reasons(small, "ended", "vip") == ["exit: small order"]
    big = run(rules, [*contactable(), track("Order Completed", "1h", total=500)])
    assert sends(big) == [("vip", "email", "thanks")]


GOAL = """
rules:
  - id: welcome
    category: activation
    trigger: {event: Signed Up}
    goal: {event: Order Completed, within: 7d}
    exit_on: [Unsubscribed]
    steps:
      - send: {channel: email, template: welcome}
      - wait: 3d
      - send: {channel: email, template: nudge}
"""


def test_goal_reached_ends_the_journey_as_converted(tmp_path: Path) -> None:
    result = run(
        RulePack(tmp_path).rules(GOAL).load(),
        [*contactable(), track("Signed Up", "1h"), track("Order Completed", "1d")],
    )
    assert sends(result) == [("welcome", "email", "welcome")]
    assert reasons(result, "converted", "welcome") == ["goal 'Order Completed' reached"]
    assert reasons(result, "ended", "welcome") == ["goal reached"]


def test_goal_still_counts_after_the_steps_finished_but_not_after_the_window(
    tmp_path: Path,
) -> None:
    rules = RulePack(tmp_path).rules(GOAL).load()
    within = run(rules, [*contactable(), track("Signed Up", "1h"), track("Order Completed", "5d")])
    assert [s.template for s in within.sends] == ["welcome", "nudge"]
    assert reasons(within, "ended", "welcome") == ["completed"]
    assert [o.at for o in of(within, "converted", "welcome")] == [START + dt.timedelta(days=5)]

    late = run(rules, [*contactable(), track("Signed Up", "1h"), track("Order Completed", "8d")])
    assert of(late, "converted") == []


def test_exit_on_ends_the_journey_before_its_next_send(tmp_path: Path) -> None:
    result = run(
        RulePack(tmp_path).rules(GOAL).load(),
        [*contactable(), track("Signed Up", "1h"), track("Unsubscribed", "1d")],
    )
    assert sends(result) == [("welcome", "email", "welcome")]
    assert reasons(result, "ended", "welcome") == ["exit_on 'Unsubscribed'"]


def test_if_first_time_asks_about_the_event_that_started_the_journey(tmp_path: Path) -> None:
    rules = (
        RulePack(tmp_path)
        .rules("""
        rules:
          - id: order
            category: retention
            trigger: {event: Order Completed}
            entry: every_time
            steps:
              - if: {first_time: true}
                then:
                  - send: {channel: email, template: thanks}
                else:
                  - send: {channel: email, template: promo_a}
        """)
        .load()
    )
    result = run(
        rules, [*contactable(), track("Order Completed", "1h"), track("Order Completed", "2d")]
    )
    assert [s.template for s in result.sends] == ["thanks", "promo_a"]
