"""Rows and links for the consent and messages tests: users and messages written straight to
the database, tokens signed as the running service signs them, and readers of what changed."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from service.delivery.links import LINK_LIFETIME_SECONDS, LinkClaims, sign
from service.engine.index import RuleIndex
from service.engine.loader import load_rules
from service.kit.db import unit_of_work, utcnow
from service.models import Device, Message, MessageStatusChange, Subscription, Suppression, User

SECRET = b"test-secret-key"  # the `settings` fixture's secret_key
ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}

# One rule per topic, and a transactional one; a RulePack (tests.helpers.rules) adds the rest.
RULES = """
rules:
  - id: invite
    category: acquisition
    trigger: {event: Checkout Started}
    steps:
      - send: {channel: email, template: promo_a}
  - id: welcome
    category: activation
    trigger: {event: Signed Up}
    steps:
      - send: {channel: email, template: welcome}
  - id: nudge
    category: activation
    trigger: {event: Product Used}
    steps:
      - send: {channel: email, template: nudge}
  - id: winback
    category: recall
    trigger: {event: App Opened}
    steps:
      - send: {channel: email, template: winback}
  - id: receipt
    category: retention
    transactional: true
    trigger: {event: Order Completed}
    steps:
      - send: {channel: email, template: receipt}
"""


def index_for(folder: Path) -> RuleIndex:
    return RuleIndex.from_ruleset(load_rules(folder))


def add_user(
    engine: Engine, user_id: str, email: str | None = None, phone: str | None = None
) -> int:
    now = utcnow()
    with unit_of_work(engine) as uow:
        user = User(
            user_id=user_id,
            traits={},
            email=email,
            phone=phone,
            first_seen_at=now,
            last_seen_at=now,
        )
        uow.session.add(user)
        uow.session.flush()
        return user.id


def add_device(engine: Engine, profile_id: int, platform: str, token: str) -> None:
    """A push device registered for the profile."""
    with unit_of_work(engine) as uow:
        uow.session.add(
            Device(profile_id=profile_id, platform=platform, token=token, created_at=utcnow())
        )


def add_message(
    engine: Engine,
    profile_id: int | None,
    *,
    rule: str = "winback",
    channel: str = "email",
    template: str | None = None,
    status: str = "sent",
    to_address: str | None = None,
    transactional: bool = False,
    history: tuple[tuple[str, str | None], ...] = (),
    at: dt.datetime | None = None,
) -> int:
    """A message row as the engine leaves it, with the given status history."""
    now = at or utcnow()
    with unit_of_work(engine) as uow:
        message = Message(
            dedupe_key=uuid.uuid4().hex,
            profile_id=profile_id,
            rule_id=rule,
            rule_version="v1",
            step=0,
            channel=channel,
            template=template or rule,
            to_address=to_address,
            transactional=transactional,
            status=status,
            status_at=now,
            send_at=now,
            created_at=now,
        )
        uow.session.add(message)
        uow.session.flush()
        for moved_to, detail in history:
            uow.session.add(
                MessageStatusChange(message_id=message.id, status=moved_to, detail=detail, at=now)
            )
        return message.id


def token(
    profile_id: int,
    channel: str = "email",
    topic: str = "recall",
    message_id: int | None = None,
    *,
    key: bytes = SECRET,
    issued_at: float | None = None,
) -> str:
    return sign(key, LinkClaims(profile_id, channel, topic, message_id), issued_at)


def expired_token(profile_id: int, message_id: int | None = None) -> str:
    return token(
        profile_id, message_id=message_id, issued_at=time.time() - LINK_LIFETIME_SECONDS - 60
    )


def subscriptions(engine: Engine) -> list[tuple[int, str, str, bool, str]]:
    """(profile, channel, topic, subscribed, source) of every row."""
    with unit_of_work(engine) as uow:
        rows = uow.session.scalars(
            select(Subscription).order_by(
                Subscription.profile_id, Subscription.channel, Subscription.topic
            )
        )
        return [(r.profile_id, r.channel, r.topic, r.subscribed, r.source) for r in rows]


def suppressions(engine: Engine) -> list[tuple[str, str, str]]:
    """(channel, address, reason) of every row."""
    with unit_of_work(engine) as uow:
        rows = uow.session.scalars(select(Suppression).order_by(Suppression.id))
        return [(r.channel, r.address, r.reason) for r in rows]


def message_row(engine: Engine, message_id: int) -> Message:
    with unit_of_work(engine) as uow:
        found = uow.session.get(Message, message_id)
        assert found is not None
        return found


def status_history(engine: Engine, message_id: int) -> list[tuple[str, str | None]]:
    with unit_of_work(engine) as uow:
        rows = uow.session.scalars(
            select(MessageStatusChange)
            .where(MessageStatusChange.message_id == message_id)
            .order_by(MessageStatusChange.id)
        )
        return [(r.status, r.detail) for r in rows]


def assert_plain_page(response: Any) -> None:
    """200, HTML, and neither a cookie nor a redirect (RFC 8058 one-click answers)."""
    assert response.status_code == 200, response.text
    assert "set-cookie" not in response.headers
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
