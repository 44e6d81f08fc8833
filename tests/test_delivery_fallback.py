"""Falling back to the rule's next channel right before sending: when the planned channel can
no longer be used (an unsubscribe, a suppression, a lost address), the message is skipped
with its reason and the next channel's message is queued in its place."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from service.delivery import consent
from service.engine.index import RuleIndex
from service.kit.db import unit_of_work
from service.models import User
from tests.helpers.delivery import claim_at, history, message, minutes, profile_id
from tests.helpers.engine import START, db_messages, identify, ingest, track
from tests.helpers.rules import RulePack

RULES = """
rules:
  - id: welcome
    category: activation
    trigger: {event: Signed Up}
    steps:
      - send: {channel: email, template: welcome, fallback: [sms, push]}
  - id: invite
    category: acquisition
    trigger: {event: Invited}
    steps:
      - send: {channel: email, template: welcome, to: properties.invitee, fallback: [sms]}
"""
PHONE = "+14155550100"


@pytest.fixture
def index(tmp_path: Path) -> RuleIndex:
    return RulePack(tmp_path / "rules").events("Invited").rules(RULES).index()


def unsubscribe(engine: Engine, channel: str) -> None:
    with unit_of_work(engine) as uow:
        user = uow.session.get(User, profile_id(engine, "u-1"))
        assert user is not None
        consent.set_subscription(uow.session, user, channel, "*", False, "api", START)


def test_an_unsubscribe_after_planning_sends_on_the_next_channel(
    engine: Engine, index: RuleIndex
) -> None:
    ingest(
        engine, index, [identify(email="ada@example.com", phone=PHONE), track("Signed Up")], START
    )
    [email] = db_messages(engine)
    assert email.channel == "email"
    unsubscribe(engine, "email")

    assert claim_at(engine, index, email.id, START + minutes(1)) is None
    email_row, sms_row = db_messages(engine)
    assert email_row.status == "skipped"
    assert email_row.status_reason is not None
    assert email_row.status_reason.endswith(f"; falling back to sms (message {sms_row.id})")
    assert (sms_row.channel, sms_row.status, sms_row.template) == ("sms", "queued", "welcome")
    assert history(engine, sms_row.id)[0].detail.startswith(  # type: ignore[union-attr]
        f"fallback from email (message {email.id}): "
    )

    claimed = claim_at(engine, index, sms_row.id, START + minutes(1))
    assert claimed is not None
    assert (claimed.outgoing.channel, claimed.outgoing.to) == ("sms", PHONE)


def test_fallback_walks_the_whole_list_and_then_skips(engine: Engine, index: RuleIndex) -> None:
    ingest(
        engine, index, [identify(email="ada@example.com", phone=PHONE), track("Signed Up")], START
    )
    unsubscribe(engine, "email")
    unsubscribe(engine, "sms")
    [email] = db_messages(engine)

    claim_at(engine, index, email.id, START + minutes(1))
    sms = db_messages(engine)[1]
    claim_at(engine, index, sms.id, START + minutes(1))
    push = db_messages(engine)[2]
    assert push.channel == "push"
    # The user has no push device: the last channel is skipped, with nothing after it.
    assert claim_at(engine, index, push.id, START + minutes(1)) is None
    assert message(engine, push.id).status_reason == "no push device"
    assert len(db_messages(engine)) == 3


def test_a_second_claim_does_not_fall_back_twice(engine: Engine, index: RuleIndex) -> None:
    ingest(
        engine, index, [identify(email="ada@example.com", phone=PHONE), track("Signed Up")], START
    )
    [email] = db_messages(engine)
    unsubscribe(engine, "email")
    claim_at(engine, index, email.id, START + minutes(1))
    claim_at(engine, index, email.id, START + minutes(1))
    assert [m.channel for m in db_messages(engine)] == ["email", "sms"]


def test_a_send_to_an_event_address_has_no_other_channel(engine: Engine, index: RuleIndex) -> None:
    ingest(
        engine, index, [identify(phone=PHONE), track("Invited", invitee="bo@example.com")], START
    )
    [invite] = db_messages(engine)
    with unit_of_work(engine) as uow:
        consent.suppress(uow.session, "email", "bo@example.com", "hard_bounce", START)

    assert claim_at(engine, index, invite.id, START + minutes(1)) is None
    assert message(engine, invite.id).status == "skipped"
    assert len(db_messages(engine)) == 1
