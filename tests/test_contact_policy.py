"""Frequency caps: planning a message and claiming it apply one rule, so a send that one lets
through the other does not refuse for the same history.

Each history is one where the two used to disagree: planning counted every message the user
had, by when it was due; the claim counted sent ones, by their latest status change (which a
delivery report moves). Now both count messages that went out, by when they were claimed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from service.delivery.providers import Sent
from service.delivery.service import record_result, set_status
from service.engine.index import RuleIndex
from service.kit.db import unit_of_work
from service.models import Message, MessageStatus
from tests.helpers.delivery import claim_at, minutes, profile_id
from tests.helpers.engine import START, db_messages, identify, ingest, track
from tests.helpers.rules import RulePack

RULES = """
rules:
  - id: welcome
    category: activation
    trigger: {event: Signed Up}
    goal: {event: Product Used, within: 7d}
    steps:
      - send: {channel: email, template: welcome}
  - id: thanks
    category: retention
    trigger: {event: Order Completed}
    entry: every_time
    steps:
      - send: {channel: email, template: thanks}
"""
CAPPED = "caps: [{max: 1, per: 1d, channel: email}]"
DAY = dt.timedelta(days=1)


def rules_index(folder: Path, policy: str) -> RuleIndex:
    return RulePack(folder).policy(policy).rules(RULES).index()


def message_of(engine: Engine, user_id: str, rule_id: str) -> int:
    profile = profile_id(engine, user_id)
    [found] = [m.id for m in db_messages(engine) if (m.profile_id, m.rule_id) == (profile, rule_id)]
    return found


def welcome(engine: Engine, index: RuleIndex, user_id: str) -> int:
    calls = [identify(email=f"{user_id}@example.com"), track("Signed Up")]
    ingest(engine, index, calls, START, user_id=user_id)
    return message_of(engine, user_id, "welcome")


def sent(engine: Engine, index: RuleIndex, user_id: str, claimed: dt.datetime) -> int:
    found = welcome(engine, index, user_id)
    assert claim_at(engine, index, found, claimed) is not None
    with unit_of_work(engine) as uow:
        record_result(uow.session, found, Sent("p-1"), "fake-email", claimed, 5)
    return found


def reported(engine: Engine, message_id: int, status: MessageStatus, at: dt.datetime) -> None:
    """A delivery report moves the message on."""
    with unit_of_work(engine) as uow:
        row = uow.session.get(Message, message_id)
        assert row is not None
        set_status(uow.session, row, status, at, "reported by the provider")


def opened_hours_later(engine: Engine, index: RuleIndex, user_id: str) -> None:
    reported(
        engine,
        sent(engine, index, user_id, START),
        MessageStatus.OPENED,
        START + dt.timedelta(hours=20),
    )


def skipped_at_its_claim(engine: Engine, index: RuleIndex, user_id: str) -> None:
    found = welcome(engine, index, user_id)
    ingest(engine, index, [track("Product Used")], START + minutes(1), user_id=user_id)
    assert claim_at(engine, index, found, START + minutes(2)) is None  # goal reached first


def bounced(engine: Engine, index: RuleIndex, user_id: str) -> None:
    reported(engine, sent(engine, index, user_id, START), MessageStatus.BOUNCED, START + minutes(5))


def claimed_three_hours_late(engine: Engine, index: RuleIndex, user_id: str) -> None:
    sent(engine, index, user_id, START + dt.timedelta(hours=3))  # due at START


def sent_on_time(engine: Engine, index: RuleIndex, user_id: str) -> None:
    sent(engine, index, user_id, START)


History = Callable[[Engine, RuleIndex, str], None]


@pytest.mark.parametrize(
    ("history", "at", "allowed"),
    [
        # Where the two used to disagree:
        (opened_hours_later, START + DAY + dt.timedelta(hours=1), True),  # claim refused
        (skipped_at_its_claim, START + dt.timedelta(hours=1), True),  # planning refused
        (bounced, START + dt.timedelta(hours=1), False),  # the claim let it through
        (claimed_three_hours_late, START + DAY + dt.timedelta(hours=1), False),  # planning did
        # The window's edge: a send exactly `per` ago has left it.
        (sent_on_time, START + DAY - minutes(1), False),
        (sent_on_time, START + DAY, True),
    ],
)
def test_planning_and_claiming_agree_on_what_counts_against_a_cap(
    engine: Engine, tmp_path: Path, history: History, at: dt.datetime, allowed: bool
) -> None:
    uncapped = rules_index(tmp_path / "uncapped", "{}")
    capped = rules_index(tmp_path / "capped", CAPPED)

    # Planning: the capped rules plan the next message for one user...
    history(engine, uncapped, "planned")
    ingest(engine, capped, [track("Order Completed")], at, user_id="planned")
    planned = any(
        m.rule_id == "thanks" and m.profile_id == profile_id(engine, "planned")
        for m in db_messages(engine)
    )

    # ...and the claim: for another user with the same history, the message was planned
    # before the cap, which the claim now applies.
    history(engine, uncapped, "claimed")
    ingest(engine, uncapped, [track("Order Completed")], at, user_id="claimed")
    claimed = claim_at(engine, capped, message_of(engine, "claimed", "thanks"), at) is not None

    assert (planned, claimed) == (allowed, allowed)
