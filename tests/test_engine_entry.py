"""Who enters a journey and how often: entry limits, keys, holdouts, variants, priority."""

from __future__ import annotations

from pathlib import Path

from service.engine import entry
from service.processing.simulate import Result
from tests.helpers.engine import contactable, of, reasons, run, sends, track
from tests.helpers.rules import RulePack


def rule_with_entry(entry: str, first_step: str = "") -> str:
    return f"""
    rules:
      - id: thanks
        category: retention
        trigger: {{event: Order Completed}}
        entry: {entry}
        steps:
          {first_step}
          - send: {{channel: email, template: thanks}}
    """


def days_sent(result: Result) -> list[int]:
    return [s.at.day for s in result.sends]


def test_entry_once_enters_a_user_only_once_ever(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).rules(rule_with_entry("once")).load()
    result = run(
        rules, [*contactable(), track("Order Completed", "1h"), track("Order Completed", "40d")]
    )
    assert days_sent(result) == [5]
    assert reasons(result, "not_entered", "thanks") == [
        "event 'Order Completed': entry is once, and the user entered on 2026-01-05 11:00 UTC"
    ]


def test_entry_once_per_window_lets_the_user_in_again_after_it(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).rules(rule_with_entry("{once_per: 3d}")).load()
    result = run(
        rules,
        [
            *contactable(),
            track("Order Completed", "1h"),
            track("Order Completed", "2d"),
            track("Order Completed", "3d2h"),
        ],
    )
    assert days_sent(result) == [5, 8]
    assert reasons(result, "not_entered", "thanks") == [
        "event 'Order Completed': entry is once per 3d, and the user entered on "
        "2026-01-05 11:00 UTC"
    ]


def test_entry_every_time_still_allows_one_active_journey_at_a_time(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).rules(rule_with_entry("every_time", "- wait: 1d")).load()
    result = run(
        rules,
        [
            *contactable(),
            track("Order Completed", "1h"),
            track("Order Completed", "2h"),  # the first journey still waits
            track("Order Completed", "3d"),
            track("Order Completed", "4d"),
        ],
    )
    assert days_sent(result) == [6, 9, 10]
    assert reasons(result, "not_entered", "thanks") == [
        "event 'Order Completed': already in this journey"
    ]


CART = """
rules:
  - id: cart
    category: retention
    trigger: {event: Checkout Started}
    key: cart_id
    entry: every_time
    steps:
      - wait: 4h
      - send: {channel: email, template: reminder}
"""


def test_key_gives_each_value_its_own_journey(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).rules(CART).load()
    result = run(
        rules,
        [
            *contactable(),
            track("Checkout Started", "1h", cart_id="c1"),
            track("Checkout Started", "2h", cart_id="c2"),
            track("Checkout Started", "3h", cart_id="c1"),
            track("Checkout Started", "3h", product="no cart"),
        ],
    )
    assert [(s.template, s.at.hour) for s in result.sends] == [("reminder", 15), ("reminder", 16)]
    assert reasons(result, "not_entered", "cart") == [
        "event 'Checkout Started': already in this journey for cart_id 'c1'",
        "event 'Checkout Started': the event has no 'cart_id' to key the journey on",
    ]


HOLDOUT = """
rules:
  - id: winback
    category: recall
    trigger: {event: Signed Up}
    holdout: 30%
    steps:
      - send: {channel: email, template: welcome}
      - wait: 1d
      - send: {channel: email, template: nudge}
    goal: {event: Order Completed, within: 7d}
"""


def in_holdout(user_id: str, rule_id: str = "winback", percent: float = 30) -> bool:
    return entry._bucket(user_id, rule_id, "holdout") * 100 < percent


def test_holdout_keeps_the_same_users_out_and_still_measures_their_goal(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).rules(HOLDOUT).load()
    held = next(f"user-{i}" for i in range(1000) if in_holdout(f"user-{i}"))
    treated = next(f"user-{i}" for i in range(1000) if not in_holdout(f"user-{i}"))
    timeline = [*contactable(), track("Signed Up", "1h"), track("Order Completed", "3d")]

    for _ in range(2):  # the same user always lands on the same side
        result = run(rules, timeline, user_id=held)
        assert sends(result) == []
        assert reasons(result, "holdout", "winback") == [
            "event 'Signed Up': kept out for measurement (30% holdout)"
        ]
        assert len(of(result, "converted", "winback")) == 1

    result = run(rules, timeline, user_id=treated)
    assert sends(result) == [("winback", "email", "welcome"), ("winback", "email", "nudge")]
    assert of(result, "holdout") == []
    assert len(of(result, "converted", "winback")) == 1


def test_holdout_share_is_close_to_the_percentage() -> None:
    held = sum(in_holdout(f"user-{i}") for i in range(1000))
    assert 250 <= held <= 350
    # Another rule's holdout picks other users: being held out of one is no sentence for all.
    both = sum(in_holdout(f"user-{i}") and in_holdout(f"user-{i}", "other") for i in range(1000))
    assert 50 <= both <= 130


VARIANTS = """
rules:
  - id: promo
    category: retention
    trigger: {event: Signed Up}
    variants:
      - {id: a, weight: 1}
      - {id: b, weight: 3}
    steps:
      - send: {channel: email, template: {a: promo_a, b: promo_b}}
"""


def test_variants_are_weighted_stable_and_send_their_own_template(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).rules(VARIANTS).load()
    rule = rules.rules[0].rule
    assigned = {f"user-{i}": entry._variant(rule, f"user-{i}") for i in range(1000)}
    share_a = sum(v == "a" for v in assigned.values()) / 1000
    assert 0.20 <= share_a <= 0.30

    for user_id in ("user-1", "user-2", "user-3", "user-4", "user-5"):
        variant = assigned[user_id]
        for _ in range(2):
            result = run(rules, [*contactable(), track("Signed Up", "1h")], user_id=user_id)
            assert sends(result) == [("promo", "email", f"promo_{variant}")]
            assert reasons(result, "entered", "promo") == [f"event 'Signed Up', variant {variant}"]


COMPETING = """
rules:
  - id: low
    category: retention
    priority: 1
    trigger: {event: Order Completed}
    steps:
      - send: {channel: email, template: promo_a}
  - id: high
    category: retention
    priority: 10
    trigger: {event: Order Completed}
    steps:
      - send: {channel: email, template: thanks}
  - id: later
    category: retention
    trigger: {event: Order Completed}
    steps:
      - wait: 1h
      - send: {channel: email, template: receipt}
"""


def test_max_sends_per_event_lets_only_the_higher_priority_rule_send(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).rules(COMPETING).load()
    result = run(rules, [*contactable(), track("Order Completed", "1h")])
    assert sends(result) == [("high", "email", "thanks"), ("later", "email", "receipt")]
    assert result.sends[1].at.hour == 12  # a rule that waits first does not count
    assert reasons(result, "not_entered", "low") == [
        "event 'Order Completed': max_sends_per_event (1) already reached by rules of "
        "higher priority"
    ]


def test_max_sends_per_event_can_allow_more(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).policy("max_sends_per_event: 2").rules(COMPETING).load()
    result = run(rules, [*contactable(), track("Order Completed", "1h")])
    assert sorted(sends(result)) == [
        ("high", "email", "thanks"),
        ("later", "email", "receipt"),
        ("low", "email", "promo_a"),
    ]


def test_a_held_out_rule_leaves_the_send_to_the_next_one(tmp_path: Path) -> None:
    rules = (
        RulePack(tmp_path)
        .rules(COMPETING.replace("priority: 10", "priority: 10\n    holdout: 100"))
        .load()
    )
    result = run(rules, [*contactable(), track("Order Completed", "1h")])
    assert of(result, "holdout", "high") != []
    assert ("low", "email", "promo_a") in sends(result)


def test_priority_not_file_order_decides(tmp_path: Path) -> None:
    flipped = COMPETING.replace("priority: 1\n", "priority: 20\n")
    result = run(
        RulePack(tmp_path).rules(flipped).load(), [*contactable(), track("Order Completed", "1h")]
    )
    assert sends(result)[0] == ("low", "email", "promo_a")
    assert of(result, "not_entered", "high") != []


def test_priority_decides_between_event_and_stage_change_rules(tmp_path: Path) -> None:
    """The activation event also changes the stage: the rule of higher priority sends, whether
    the event or the stage change set it off."""
    rules = (
        RulePack(tmp_path)
        .rules("""
        rules:
          - id: used
            category: activation
            priority: 1
            trigger: {event: Product Used}
            steps:
              - send: {channel: email, template: promo_a}
          - id: activated
            category: activation
            priority: 10
            trigger: {stage_changed: {to: activated}}
            steps:
              - send: {channel: email, template: welcome}
        """)
        .load()
    )
    result = run(rules, [*contactable(), track("Product Used", "1h")])
    assert sends(result) == [("activated", "email", "welcome")]
    assert reasons(result, "not_entered", "used") == [
        "event 'Product Used': max_sends_per_event (1) already reached by rules of higher priority"
    ]
