"""Consent at the moment of sending, on SQLite and PostgreSQL: a queued message is checked
against subscriptions and the suppression list when a worker claims it; transactional
messages ignore subscriptions but not bounces, complaints or an operator's block."""

from __future__ import annotations

import datetime as dt
import email
from email import policy
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.engine import Engine

from service.delivery import consent
from service.delivery.service import Links, claim
from service.kit.db import unit_of_work, utcnow
from service.kit.settings import Settings
from service.models import User
from tests.helpers.api import send
from tests.helpers.consent import (
    ONE_CLICK,
    RULES,
    SECRET,
    add_message,
    add_user,
    assert_plain_page,
    index_for,
    message_row,
)
from tests.helpers.engine import db_messages
from tests.helpers.rules import RulePack
from tests.helpers.waiting import EmbeddedWorker

LINKS = Links("https://lifeline.example", SECRET)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return RulePack(tmp_path / "rules").rules(RULES).write()


def set_subscription(engine: Engine, profile_id: int, channel: str, topic: str, on: bool) -> None:
    with unit_of_work(engine) as uow:
        user = uow.session.get(User, profile_id)
        assert user is not None
        consent.set_subscription(uow.session, user, channel, topic, on, "api", utcnow())


def suppress(engine: Engine, channel: str, address: str, reason: str) -> None:
    with unit_of_work(engine) as uow:
        consent.suppress(uow.session, channel, address, reason, utcnow())


def queued(
    engine: Engine,
    profile_id: int | None,
    rule: str,
    channel: str = "email",
    to_address: str | None = None,
    transactional: bool = False,
) -> int:
    return add_message(
        engine,
        profile_id,
        rule=rule,
        template="promo_a" if rule == "invite" else rule,  # as in RULES
        channel=channel,
        to_address=to_address,
        transactional=transactional,
        status="queued",
        at=utcnow() - dt.timedelta(seconds=1),
    )


def try_to_send(engine: Engine, rules_dir: Path, message_id: int) -> tuple[str, str | None]:
    """What a worker's claim leaves: ('sending', None) when it would go to the provider."""
    with unit_of_work(engine) as uow:
        claim(uow.session, index_for(rules_dir), LINKS, message_id, utcnow())
    message = message_row(engine, message_id)
    return message.status, None if message.status == "sending" else message.status_reason


SENDS = ("sending", None)


def test_an_unsubscribe_from_a_topic_skips_that_topic_only(engine: Engine, rules_dir: Path) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com", phone="+14155550100")
    set_subscription(engine, profile, "email", "recall", False)

    assert try_to_send(engine, rules_dir, queued(engine, profile, "winback")) == (
        "skipped",
        "unsubscribed from email: recall",
    )
    assert try_to_send(engine, rules_dir, queued(engine, profile, "nudge")) == SENDS
    sms = queued(engine, profile, "winback", channel="sms")
    assert try_to_send(engine, rules_dir, sms) == SENDS


def test_an_unsubscribe_from_a_whole_channel_skips_every_topic_on_it(
    engine: Engine, rules_dir: Path
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com", phone="+14155550100")
    set_subscription(engine, profile, "email", "recall", True)  # '*' wins over a topic
    set_subscription(engine, profile, "email", "*", False)

    for rule in ("winback", "nudge", "invite"):
        assert try_to_send(engine, rules_dir, queued(engine, profile, rule)) == (
            "skipped",
            "unsubscribed from email (all topics)",
        )
    sms = queued(engine, profile, "nudge", channel="sms")
    assert try_to_send(engine, rules_dir, sms) == SENDS

    set_subscription(engine, profile, "email", "*", True)
    assert try_to_send(engine, rules_dir, queued(engine, profile, "winback")) == SENDS


def test_transactional_messages_ignore_subscriptions_and_unsubscribes(
    engine: Engine, rules_dir: Path
) -> None:
    profile = add_user(engine, "u-1", email="Ada@Example.com")
    set_subscription(engine, profile, "email", "*", False)  # also suppresses: 'unsubscribe'
    set_subscription(engine, profile, "email", "retention", False)

    receipt = queued(engine, profile, "receipt", transactional=True)
    assert try_to_send(engine, rules_dir, receipt) == SENDS
    assert try_to_send(engine, rules_dir, queued(engine, profile, "winback")) == (
        "skipped",
        "unsubscribed from email (all topics)",
    )
    # The address stays unsubscribed when another profile turns up with it.
    other = add_user(engine, "u-2", email="ada@example.com")
    assert try_to_send(engine, rules_dir, queued(engine, other, "winback")) == (
        "skipped",
        "email address suppressed: unsubscribe",
    )
    receipt = queued(engine, other, "receipt", transactional=True)
    assert try_to_send(engine, rules_dir, receipt) == SENDS


@pytest.mark.parametrize(
    ("reason", "said"),
    [("hard_bounce", "hard bounce"), ("complaint", "complaint"), ("admin", "admin")],
)
def test_bounces_complaints_and_operators_stop_even_transactional_messages(
    engine: Engine, rules_dir: Path, reason: str, said: str
) -> None:
    profile = add_user(engine, "u-1", email="Ada@Example.com")
    suppress(engine, "email", "ada@example.com", reason)

    for rule, transactional in (("receipt", True), ("welcome", False)):
        message = queued(engine, profile, rule, transactional=transactional)
        assert try_to_send(engine, rules_dir, message) == (
            "skipped",
            f"email address suppressed: {said}",
        )


def test_a_suppressed_address_gets_nothing_whoever_it_belongs_to(
    engine: Engine, rules_dir: Path
) -> None:
    suppress(engine, "email", "friend@example.com", "admin")
    suppress(engine, "sms", "+14155550100", "complaint")
    inviter = add_user(engine, "u-1", email="ada@example.com")
    later = add_user(engine, "u-2", email="FRIEND@example.com", phone="+1 (415) 555-0100")

    invitation = queued(engine, inviter, "invite", to_address="Friend@Example.com")
    assert try_to_send(engine, rules_dir, invitation) == (
        "skipped",
        "email address suppressed: admin",
    )
    assert try_to_send(engine, rules_dir, queued(engine, later, "welcome"))[0] == "skipped"
    sms = queued(engine, later, "welcome", channel="sms")
    assert try_to_send(engine, rules_dir, sms) == ("skipped", "sms address suppressed: complaint")
    assert try_to_send(engine, rules_dir, queued(engine, inviter, "welcome")) == SENDS


def test_an_invitation_is_not_held_back_by_the_inviters_subscriptions(
    engine: Engine, rules_dir: Path
) -> None:
    """A message to an address in the event goes to someone else; the profile's choices are
    about the profile's own inbox."""
    inviter = add_user(engine, "u-1", email="ada@example.com")
    set_subscription(engine, inviter, "email", "*", False)
    invitation = queued(engine, inviter, "invite", to_address="friend@example.com")
    assert try_to_send(engine, rules_dir, invitation) == SENDS


async def last_status(embedded: EmbeddedWorker, rule: str) -> tuple[str, str | None]:
    """The status and reason of the rule's latest message, once every message has settled."""
    found = [m for m in await embedded.settled(1) if m.rule_id == rule]
    assert found, rule
    return found[-1].status, found[-1].status_reason


async def test_the_one_click_header_of_a_sent_email_stops_later_messages_of_its_topic(
    settings: Settings,
    client: httpx.AsyncClient,
    engine: Engine,
    write_key: str,
    embedded: EmbeddedWorker,
) -> None:
    """End to end with the embedded worker: the List-Unsubscribe header in the outbox works,
    and the next message of that topic is skipped with the reason."""
    batch = [
        {"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com"}},
        {"type": "track", "userId": "u-1", "event": "Signed Up"},
    ]
    await send(client, write_key, "batch", {"batch": batch})
    await embedded.processed(2)
    assert (await last_status(embedded, "welcome"))[0] == "sent"
    [welcome] = [m for m in db_messages(engine) if m.rule_id == "welcome"]
    assert welcome.provider_message_id is not None

    eml = (settings.outbox_dir / welcome.provider_message_id).read_bytes()
    headers = email.message_from_bytes(eml, policy=policy.SMTP)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    uri, mailto = (part.strip(" <>") for part in headers["List-Unsubscribe"].split(","))
    assert mailto.startswith("mailto:")
    response = await client.post(
        urlsplit(uri).path, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
    )
    assert_plain_page(response)
    assert message_row(engine, welcome.id).status == "unsubscribed"

    await send(client, write_key, "track", {"userId": "u-1", "event": "Product Used"})
    await send(client, write_key, "track", {"userId": "u-1", "event": "App Opened"})
    await embedded.processed(4)
    assert await last_status(embedded, "nudge") == (
        "skipped",
        "unsubscribed from email: activation",
    )
    assert (await last_status(embedded, "winback"))[0] == "sent"  # recall: still subscribed
