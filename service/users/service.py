"""Profiles and identity: built from events by the worker, read and erased by the admin API."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from service.kit.db import insert_ignoring_conflicts
from service.models import (
    Decision,
    Event,
    Identity,
    StageChange,
    User,
)
from service.users import profile as fields


def lock_profiles(
    session: Session, first_seen: dict[str, dt.datetime], also_existing: Iterable[str] = ()
) -> dict[str, User]:
    """Row-lock the profiles of `first_seen`'s user ids, creating those that do not exist yet
    (first seen at the given time), and of `also_existing` ids that already have one.

    Locks are taken in user_id order, so two workers never deadlock on the same pair of users.
    """
    wanted = sorted(set(first_seen) | set(also_existing))
    if not wanted:
        return {}
    if first_seen:
        insert = insert_ignoring_conflicts(User.__table__, _dialect(session), ["user_id"])
        session.execute(
            insert,
            [
                {"user_id": uid, "traits": {}, "first_seen_at": at, "last_seen_at": at}
                for uid, at in sorted(first_seen.items())
            ],
        )
    users = session.scalars(
        select(User).where(User.user_id.in_(wanted)).order_by(User.user_id).with_for_update()
    )
    return {user.user_id: user for user in users}


def profiles_for_anonymous_ids(session: Session, anonymous_ids: Iterable[str]) -> dict[str, User]:
    ids = sorted(set(anonymous_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(Identity.anonymous_id, User)
        .join(User, User.id == Identity.profile_id)
        .where(Identity.anonymous_id.in_(ids))
    )
    return {anonymous_id: user for anonymous_id, user in rows.all()}


def touch(user: User, event: Event) -> None:
    """Seen times, and the timezone and locale a client reports in its context."""
    user.first_seen_at = min(user.first_seen_at, event.timestamp)
    user.last_seen_at = max(user.last_seen_at, event.timestamp)
    context = event.context or {}
    user.timezone = fields.valid_timezone(context.get("timezone")) or user.timezone
    user.locale = fields.valid_locale(context.get("locale")) or user.locale


def apply_traits(user: User, traits: dict[str, object], at: dt.datetime) -> None:
    user.traits, user.traits_at = fields.merge_traits(user.traits or {}, user.traits_at, traits, at)
    merged = user.traits
    user.email = fields.normalise_email(merged.get("email"))
    user.phone, user.phone_invalid = fields.normalise_phone(merged.get("phone"), merged)
    user.timezone = fields.valid_timezone(merged.get("timezone")) or user.timezone
    user.locale = fields.valid_locale(merged.get("locale")) or user.locale


def link_anonymous_id(session: Session, anonymous_id: str, user: User, at: dt.datetime) -> None:
    """Attach an anonymousId and its history to a profile (first link wins, as Segment's)."""
    insert = insert_ignoring_conflicts(
        Identity.__table__,
        _dialect(session),
        ["anonymous_id"],
    )
    session.execute(
        insert, [{"anonymous_id": anonymous_id, "profile_id": user.id, "linked_at": at}]
    )
    owner = session.scalar(select(Identity.profile_id).where(Identity.anonymous_id == anonymous_id))
    if owner != user.id:
        return
    session.execute(
        update(Event)
        .where(Event.anonymous_id == anonymous_id, Event.profile_id.is_(None))
        .values(profile_id=user.id)
    )


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


# --- Admin API -------------------------------------------------------------------------------


async def get_profile(session: AsyncSession, user_id: str) -> User | None:
    user: User | None = await session.scalar(select(User).where(User.user_id == user_id))
    return user


async def anonymous_ids(session: AsyncSession, profile_id: int) -> list[str]:
    rows = await session.scalars(
        select(Identity.anonymous_id)
        .where(Identity.profile_id == profile_id)
        .order_by(Identity.linked_at)
    )
    return list(rows)


async def timeline(
    session: AsyncSession, profile_id: int, before_id: int | None, limit: int
) -> list[Event]:
    query = select(Event).where(Event.profile_id == profile_id)
    if before_id is not None:
        query = query.where(Event.id < before_id)
    rows = await session.scalars(query.order_by(Event.id.desc()).limit(limit))
    return list(rows)


async def stage_history(session: AsyncSession, profile_id: int) -> list[StageChange]:
    rows = await session.scalars(
        select(StageChange).where(StageChange.profile_id == profile_id).order_by(StageChange.id)
    )
    return list(rows)


async def decisions(
    session: AsyncSession, profile_id: int, before_id: int | None, limit: int
) -> list[Decision]:
    query = select(Decision).where(Decision.profile_id == profile_id)
    if before_id is not None:
        query = query.where(Decision.id < before_id)
    return list(await session.scalars(query.order_by(Decision.id.desc()).limit(limit)))
