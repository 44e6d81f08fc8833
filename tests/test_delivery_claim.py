"""Right before sending, a queued message is checked again, rendered and claimed: on SQLite and
PostgreSQL, with messages made by processing events at explicit times."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from service.delivery.links import verify
from service.delivery.providers import Sent
from service.delivery.service import record_result
from service.engine.index import RuleIndex
from service.kit.db import async_unit_of_work, create_async_db_engine, unit_of_work
from service.processing.erasure import erase
from tests.helpers.delivery import (
    LINKS,
    claim_at,
    history,
    message,
    minutes,
    profile_id,
    statuses,
)
from tests.helpers.engine import START, db_messages, identify, ingest, track
from tests.helpers.rules import QUIET_NIGHTS, RulePack

RULES = """
rules:
  - id: cart
    category: retention
    trigger: {event: Checkout Started}
    goal: {event: Order Completed, within: 7d}
    steps:
      - send: {channel: sms, template: reminder}
  - id: welcome
    category: activation
    trigger: {event: Signed Up}
    goal: {event: Product Used, within: 7d}
    steps:
      - send: {channel: email, template: welcome}
      - wait: 1d
      - send: {channel: email, template: nudge}
  - id: thanks
    category: retention
    trigger: {event: Order Completed}
    steps:
      - send: {channel: email, template: thanks}
  - id: receipt
    category: retention
    trigger: {event: Plan Changed}
    steps:
      - send: {channel: email, template: receipt}
"""
NIGHT = START.replace(hour=22)  # 22:00 UTC: quiet hours for a user in UTC
PHONE = "+14155550100"


def rules_index(folder: Path, policy: str = QUIET_NIGHTS) -> RuleIndex:
    # Printing a trait with no default fails to render for a user who lacks it.
    receipt = 'email: {subject: "Receipt", html: "<p>Hi {{ user.traits.first_name }}</p>"}'
    return RulePack(folder).policy(policy).rules(RULES).template("receipt", receipt).index()


@pytest.fixture
def index(tmp_path: Path) -> RuleIndex:
    return rules_index(tmp_path / "rules")


def sent_at(engine: Engine, index: RuleIndex, message_id: int, now: dt.datetime) -> None:
    assert claim_at(engine, index, message_id, now) is not None
    with unit_of_work(engine) as uow:
        record_result(uow.session, message_id, Sent("p-1"), "fake-email", now, 5)


def only(engine: Engine, rule_id: str) -> int:
    [found] = [m.id for m in db_messages(engine) if m.rule_id == rule_id]
    return found


def test_a_due_message_is_rendered_and_claimed_once(engine: Engine, index: RuleIndex) -> None:
    ingest(engine, index, [identify(email="ada@example.com"), track("Signed Up")], START)
    welcome = only(engine, "welcome")

    claimed = claim_at(engine, index, welcome, START + minutes(1))
    assert claimed is not None
    assert claimed.attempt == 1
    outgoing = claimed.outgoing
    assert (outgoing.message_id, outgoing.channel, outgoing.to) == (
        welcome,
        "email",
        "ada@example.com",
    )
    assert outgoing.content == {"subject": "welcome", "html": "<p>welcome</p>", "text": "welcome"}
    assert outgoing.idempotency_key == f"lifeline-message-{welcome}"
    token = outgoing.headers["List-Unsubscribe"].split("/v1/unsubscribe/")[1].split(">")[0]
    claims = verify(LINKS.key, token)
    assert claims is not None
    assert (claims.profile_id, claims.channel, claims.topic, claims.message_id) == (
        profile_id(engine, "u-1"),
        "email",
        "activation",
        welcome,
    )
    row = message(engine, welcome)
    assert (row.status, row.attempts, row.claimed_at) == ("sending", 1, START + minutes(1))

    # The same job delivered again finds the message claimed and does nothing.
    assert claim_at(engine, index, welcome, START + minutes(1)) is None
    assert message(engine, welcome).attempts == 1
    assert statuses(engine, welcome).count("sending") == 1


def test_status_history_runs_queued_sending_sent_with_times(
    engine: Engine, index: RuleIndex
) -> None:
    ingest(engine, index, [identify(email="ada@example.com"), track("Signed Up")], START)
    welcome = only(engine, "welcome")
    claim_at(engine, index, welcome, START + minutes(1))
    with unit_of_work(engine) as uow:
        record_result(uow.session, welcome, Sent("p-1"), "fake-email", START + minutes(2), 5)

    changes = [(c.status, c.at, c.detail) for c in history(engine, welcome)]
    assert changes == [
        ("queued", START, None),
        ("sending", START + minutes(1), None),
        ("sent", START + minutes(2), "accepted by fake-email"),
    ]
    row = message(engine, welcome)
    assert (row.status, row.status_at, row.provider, row.provider_message_id) == (
        "sent",
        START + minutes(2),
        "fake-email",
        "p-1",
    )


def test_a_message_not_due_yet_is_not_claimed(engine: Engine, index: RuleIndex) -> None:
    ingest(engine, index, [identify(phone=PHONE), track("Checkout Started")], NIGHT)
    cart = only(engine, "cart")
    send_at = message(engine, cart).send_at
    assert send_at == dt.datetime(2026, 1, 6, 8, 0, tzinfo=dt.UTC)  # deferred: quiet hours

    assert claim_at(engine, index, cart, send_at - dt.timedelta(seconds=1)) is None
    assert (message(engine, cart).status, message(engine, cart).attempts) == ("queued", 0)
    claimed = claim_at(engine, index, cart, send_at)
    assert claimed is not None
    assert claimed.outgoing.to == PHONE
    assert claimed.outgoing.content == {"body": "reminder"}
    assert message(engine, cart).status_reason == "1 SMS segment(s)"


def test_a_deferred_message_is_skipped_when_the_goal_is_reached_before_it_goes_out(
    engine: Engine, index: RuleIndex
) -> None:
    ingest(engine, index, [identify(phone=PHONE), track("Checkout Started")], NIGHT)
    cart = only(engine, "cart")
    send_at = message(engine, cart).send_at
    assert send_at > NIGHT

    ingest(engine, index, [track("Order Completed")], NIGHT + minutes(30))

    assert claim_at(engine, index, cart, send_at) is None
    row = message(engine, cart)
    assert (row.status, row.status_reason) == (
        "skipped",
        "the journey ended before sending: goal reached",
    )
    assert "sending" not in statuses(engine, cart)


def test_a_queued_message_is_skipped_when_the_goal_event_is_processed_first(
    engine: Engine, index: RuleIndex
) -> None:
    ingest(engine, index, [identify(email="ada@example.com"), track("Signed Up")], START)
    welcome = only(engine, "welcome")
    ingest(engine, index, [track("Product Used")], START + minutes(1))

    assert claim_at(engine, index, welcome, START + minutes(2)) is None
    row = message(engine, welcome)
    assert (row.status, row.status_reason) == (
        "skipped",
        "the journey ended before sending: goal reached",
    )
    assert statuses(engine, welcome)[-1] == "skipped"


async def test_a_message_to_an_erased_user_is_skipped(
    engine: Engine, index: RuleIndex, database_url: str
) -> None:
    ingest(engine, index, [identify(email="ada@example.com"), track("Signed Up")], START)
    welcome = only(engine, "welcome")
    async_engine = create_async_db_engine(database_url)
    try:
        async with async_unit_of_work(async_engine) as uow:
            await erase(uow.session, "u-1")
    finally:
        await async_engine.dispose()

    assert claim_at(engine, index, welcome, START + minutes(1)) is None
    row = message(engine, welcome)
    assert (row.status, row.status_reason) == ("skipped", "the user was erased")


def test_a_message_whose_address_is_gone_is_skipped(engine: Engine, index: RuleIndex) -> None:
    ingest(engine, index, [identify(email="ada@example.com"), track("Signed Up")], START)
    welcome = only(engine, "welcome")
    ingest(engine, index, [identify(email=None)], START + minutes(1))

    assert claim_at(engine, index, welcome, START + minutes(2)) is None
    row = message(engine, welcome)
    assert (row.status, row.status_reason) == ("skipped", "no email address")


@pytest.mark.parametrize(
    ("first_sent", "later", "skipped"),
    [
        (True, dt.timedelta(hours=1), True),
        (False, dt.timedelta(hours=1), False),  # queued messages do not count, sent ones do
        (True, dt.timedelta(hours=25), False),  # the window has moved past the first one
    ],
)
def test_a_frequency_cap_reached_by_sent_messages_skips_the_next(
    engine: Engine,
    tmp_path: Path,
    first_sent: bool,
    later: dt.timedelta,
    skipped: bool,
) -> None:
    uncapped = rules_index(tmp_path / "uncapped", policy="{}")
    ingest(engine, uncapped, [identify(email="ada@example.com"), track("Signed Up")], START)
    welcome = only(engine, "welcome")
    if first_sent:
        sent_at(engine, uncapped, welcome, START)
    ingest(engine, uncapped, [track("Order Completed")], START + later)
    thanks = only(engine, "thanks")

    # The operator has since capped email at one a day.
    capped = rules_index(tmp_path / "capped", policy="caps: [{max: 1, per: 1d, channel: email}]")
    claimed = claim_at(engine, capped, thanks, START + later)

    row = message(engine, thanks)
    if skipped:
        assert claimed is None
        assert row.status == "skipped"
        assert row.status_reason == "frequency cap: 1 email messages per 1d sent"
    else:
        assert claimed is not None
        assert row.status == "sending"


def test_quiet_hours_in_a_new_timezone_move_the_message_to_their_end(
    engine: Engine, index: RuleIndex
) -> None:
    ingest(engine, index, [identify(phone=PHONE), track("Checkout Started")], START)
    cart = only(engine, "cart")
    assert message(engine, cart).send_at == START  # 10:00 in UTC: not quiet
    # The user turns out to live in Auckland, where 10:01 UTC is 23:01.
    ingest(engine, index, [identify(timezone="Pacific/Auckland")], START + minutes(1))

    assert claim_at(engine, index, cart, START + minutes(2)) is None
    row = message(engine, cart)
    eight_in_auckland = dt.datetime(2026, 1, 5, 19, 0, tzinfo=dt.UTC)
    assert (row.status, row.send_at, row.attempts) == ("queued", eight_in_auckland, 0)
    assert row.status_reason == "quiet hours: sends at 2026-01-05 19:00 UTC"
    assert "sending" not in statuses(engine, cart)

    assert claim_at(engine, index, cart, eight_in_auckland - minutes(1)) is None
    assert claim_at(engine, index, cart, eight_in_auckland) is not None


def test_a_template_that_fails_to_render_fails_the_message(
    engine: Engine, index: RuleIndex
) -> None:
    ingest(engine, index, [identify(email="ada@example.com"), track("Plan Changed")], START)
    receipt = only(engine, "receipt")

    assert claim_at(engine, index, receipt, START) is None
    row = message(engine, receipt)
    assert row.status == "failed"
    assert row.status_reason is not None
    assert row.status_reason.startswith("template 'receipt': email.html: ")
    assert "first_name" in row.status_reason
    assert row.attempts == 0
    assert "sending" not in statuses(engine, receipt)
