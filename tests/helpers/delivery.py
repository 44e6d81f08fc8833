"""Shared pieces of the delivery tests: a provider that records its calls, and readers of a
message's row and status history."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.engine import Engine

from service.delivery.providers import Outgoing, Sent
from service.delivery.service import Claimed, Links, claim
from service.engine.index import RuleIndex
from service.kit.db import unit_of_work
from service.models import Message, MessageStatusChange, User

LINKS = Links("https://lifeline.example", b"links-test-key")


class FakeProvider:
    """Satisfies the Provider protocol; records every call and raises `error` when set."""

    def __init__(self, channel: str = "email", *, idempotent: bool = True):
        self.name = f"fake-{channel}"
        self.channel = channel
        self.idempotent = idempotent
        self.calls: list[Outgoing] = []
        self.error: Exception | None = None

    def send(self, message: Outgoing) -> Sent:
        self.calls.append(message)
        if self.error is not None:
            raise self.error
        return Sent(provider_message_id=f"fake-{message.message_id}")


def claim_at(engine: Engine, index: RuleIndex, message_id: int, now: dt.datetime) -> Claimed | None:
    with unit_of_work(engine) as uow:
        return claim(uow.session, index, LINKS, message_id, now)


def message(engine: Engine, message_id: int) -> Message:
    with unit_of_work(engine) as uow:
        found = uow.session.get(Message, message_id)
        assert found is not None
        return found


def history(engine: Engine, message_id: int) -> list[MessageStatusChange]:
    with unit_of_work(engine) as uow:
        return list(
            uow.session.scalars(
                select(MessageStatusChange)
                .where(MessageStatusChange.message_id == message_id)
                .order_by(MessageStatusChange.id)
            )
        )


def statuses(engine: Engine, message_id: int) -> list[str]:
    return [change.status for change in history(engine, message_id)]


def profile_id(engine: Engine, user_id: str) -> int:
    with unit_of_work(engine) as uow:
        found = uow.session.scalar(select(User.id).where(User.user_id == user_id))
        assert found is not None
        return found


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)
