"""The operator's view of messages: find them, read their status history, retry failures."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from service.delivery.service import set_status
from service.models import Message, MessageStatus, MessageStatusChange, User

RETRIED = "retried by an operator"


async def find(
    session: AsyncSession,
    profile_id: int | None,
    rule: str | None,
    status: str | None,
    before_id: int | None,
    limit: int,
) -> list[tuple[Message, str | None]]:
    """Messages newest first, each with its user's userId."""
    query = select(Message, User.user_id).outerjoin(User, User.id == Message.profile_id)
    if profile_id is not None:
        query = query.where(Message.profile_id == profile_id)
    if rule is not None:
        query = query.where(Message.rule_id == rule)
    if status is not None:
        query = query.where(Message.status == status)
    if before_id is not None:
        query = query.where(Message.id < before_id)
    rows = await session.execute(query.order_by(Message.id.desc()).limit(limit))
    return [(message, user_id) for message, user_id in rows]


async def get(session: AsyncSession, message_id: int) -> tuple[Message, str | None] | None:
    row = (
        await session.execute(
            select(Message, User.user_id)
            .outerjoin(User, User.id == Message.profile_id)
            .where(Message.id == message_id)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def history(session: AsyncSession, message_id: int) -> list[MessageStatusChange]:
    rows = await session.scalars(
        select(MessageStatusChange)
        .where(MessageStatusChange.message_id == message_id)
        .order_by(MessageStatusChange.id)
    )
    return list(rows)


@dataclass
class Retried:
    queued: list[int] = field(default_factory=list)
    not_failed: dict[int, str] = field(default_factory=dict)  # asked for by id: its status
    missing: list[int] = field(default_factory=list)


def retry_failed(
    session: Session, ids: Sequence[int], rule: str | None, now: dt.datetime
) -> Retried:
    """Queue failed messages again, now, with a fresh count of attempts; the scheduler hands
    them to a worker, which checks everything again before sending. Leaving 'failed', a
    terminal status, is an operator's decision, so it bypasses the forward-only rule and says
    so in the history. `ids` and `rule` narrow the choice; neither means every failure."""
    query = select(Message).where(Message.status == MessageStatus.FAILED)
    if ids:
        query = query.where(Message.id.in_(ids))
    if rule is not None:
        query = query.where(Message.rule_id == rule)
    result = Retried()
    for message in session.scalars(query.order_by(Message.id).with_for_update()):
        message.send_at, message.attempts = now, 0
        message.enqueued_at = message.claimed_at = None
        set_status(session, message, MessageStatus.QUEUED, now, RETRIED)
        result.queued.append(message.id)
    asked = set(ids) - set(result.queued)
    if asked:
        found = session.execute(select(Message.id, Message.status).where(Message.id.in_(asked)))
        result.not_failed = {message_id: status for message_id, status in sorted(found)}
        result.missing = sorted(asked - set(result.not_failed))
    return result
