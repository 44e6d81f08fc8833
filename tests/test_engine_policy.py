"""Contact pressure from policy.yaml: frequency caps, quiet hours, transactional messages."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.helpers.engine import START, contactable, identify, of, reasons, run, sends, track
from tests.helpers.rules import RulePack


def every_open(channel: str = "email", fallback: str = "[]", transactional: bool = False) -> str:
    return f"""
    rules:
      - id: ping
        category: retention
        trigger: {{event: App Opened}}
        entry: every_time
        transactional: {str(transactional).lower()}
        steps:
          - send: {{channel: {channel}, template: promo_a, fallback: {fallback}}}
    """


def opens(*offsets: str) -> list[dict[str, object]]:
    return [track("App Opened", at) for at in offsets]


def test_cap_across_channels_skips_sends_over_it_in_a_sliding_window(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).policy("caps: [{max: 2, per: 1d}]").rules(every_open()).load()
    result = run(rules, [*contactable(), *opens("1h", "2h", "3h", "1d1h30m")])
    assert [s.at - START for s in result.sends] == [
        dt.timedelta(hours=1),
        dt.timedelta(hours=2),
        dt.timedelta(days=1, hours=1, minutes=30),  # the first one left the window
    ]
    assert reasons(result, "skipped", "ping") == [
        "email 'promo_a': email: frequency cap: at most 2 messages on any channel per 1d"
    ]


def test_cap_counts_every_channel_unless_it_names_one(tmp_path: Path) -> None:
    policy = "caps: [{max: 1, per: 1d}]"
    rules = RulePack(tmp_path).policy(policy).rules(every_open("sms", "[email]")).load()
    result = run(rules, [*contactable(), *opens("1h", "2h")])
    assert sends(result) == [("ping", "sms", "promo_a")]
    assert reasons(result, "skipped", "ping") == [
        "sms 'promo_a': sms: frequency cap: at most 1 messages on any channel per 1d; "
        "email: frequency cap: at most 1 messages on any channel per 1d"
    ]


def test_a_channel_cap_moves_the_send_to_the_fallback(tmp_path: Path) -> None:
    policy = "caps: [{max: 1, per: 1d, channel: sms}]"
    rules = RulePack(tmp_path).policy(policy).rules(every_open("sms", "[email]")).load()
    result = run(rules, [*contactable(), *opens("1h", "2h")])
    assert sends(result) == [("ping", "sms", "promo_a"), ("ping", "email", "promo_a")]
    assert reasons(result, "queued", "ping")[1] == (
        "email 'promo_a' (fallback: sms: frequency cap: at most 1 sms messages per 1d)"
    )


def test_transactional_rules_ignore_caps_and_quiet_hours(tmp_path: Path) -> None:
    policy = """
    caps: [{max: 1, per: 1d}]
    quiet_hours: {start: "21:00", end: "08:00"}
    """
    rules = RulePack(tmp_path).policy(policy).rules(every_open("sms", transactional=True)).load()
    late = START.replace(hour=22)  # 22:00 UTC, inside quiet hours
    result = run(rules, [*contactable(), *opens("1h", "2h", "3h")], start=late)
    assert [s.outcome for s in result.sends] == ["queued"] * 3
    assert [s.send_at for s in result.sends] == [s.at for s in result.sends]


QUIET = """
quiet_hours: {start: "21:00", end: "08:00"}
default_timezone: Asia/Shanghai
"""


def test_quiet_hours_defer_sms_to_their_end_in_the_users_timezone(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).policy(QUIET).rules(every_open("sms")).load()
    opened = dt.datetime(2026, 1, 6, 3, 0, tzinfo=dt.UTC)  # 22:00 in New York
    result = run(
        rules,
        [*contactable(timezone="America/New_York"), track("App Opened", "0m")],
        start=opened,
    )
    [deferred] = of(result, "deferred", "ping")
    assert deferred.channel == "sms"
    assert deferred.send_at == dt.datetime(2026, 1, 6, 13, 0, tzinfo=dt.UTC)  # 08:00 EST
    assert deferred.reason == "sms 'promo_a': quiet hours, sends at 2026-01-06 13:00 UTC"


def test_quiet_hours_use_the_policy_timezone_when_the_users_is_unknown(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).policy(QUIET).rules(every_open("push")).load()
    # 14:00 UTC is 22:00 in Shanghai (and 14:00 in UTC, outside quiet hours there)
    result = run(rules, [*contactable(), *opens("4h")])
    assert [s.outcome for s in result.sends] == ["deferred"]
    assert result.sends[0].send_at == dt.datetime(2026, 1, 6, 0, 0, tzinfo=dt.UTC)  # 08:00 CST


def test_quiet_hours_leave_email_alone_by_default(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).policy(QUIET).rules(every_open("email")).load()
    result = run(rules, [*contactable(), *opens("4h")])
    assert [(s.outcome, s.send_at) for s in result.sends] == [
        ("queued", START + dt.timedelta(hours=4))
    ]


def test_quiet_hours_can_cover_email(tmp_path: Path) -> None:
    policy = QUIET.replace('"08:00"}', '"08:00", channels: [email]}')
    rules = RulePack(tmp_path).policy(policy).rules(every_open("email")).load()
    result = run(rules, [*contactable(), *opens("4h")])
    assert [s.outcome for s in result.sends] == ["deferred"]


def test_outside_quiet_hours_sms_goes_at_once(tmp_path: Path) -> None:
    rules = RulePack(tmp_path).policy(QUIET).rules(every_open("sms")).load()
    # 02:00 UTC is 10:00 in Shanghai
    result = run(
        rules,
        [identify(phone="+14155550100"), track("App Opened", "0m")],
        start=START.replace(hour=2),
    )
    assert [(s.outcome, s.send_at) for s in result.sends] == [("queued", START.replace(hour=2))]
