"""Erasing a person: their data lives in every domain's tables (events, journeys, messages,
suppressions, devices), so erasure sits above those domains."""

from __future__ import annotations

import hashlib

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.db import utcnow
from service.models import (
    Device,
    ErasedAddress,
    Event,
    Identity,
    Journey,
    Message,
    Suppression,
    User,
)


def _address_hash(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()


async def erase(session: AsyncSession, user_id: str) -> tuple[User, int]:
    """Erase a person's personal data and keep a tombstone; returns it and the events scrubbed.

    The tombstone keeps the userId, linked anonymousIds and hashes of the email and phone, so
    later events are scrubbed on arrival and the person is never messaged again.
    """
    now = utcnow()
    user = await session.scalar(select(User).where(User.user_id == user_id).with_for_update())
    if user is None:
        user = User(user_id=user_id, traits={}, first_seen_at=now, last_seen_at=now)
        session.add(user)
        await session.flush()
    for channel, address in (("email", user.email), ("sms", user.phone)):
        if address:
            await session.merge(
                ErasedAddress(address_hash=_address_hash(address), channel=channel, erased_at=now)
            )
            # The hash above stops every send to it; the list must not keep it in clear.
            await session.execute(
                delete(Suppression).where(
                    Suppression.channel == channel,
                    Suppression.address == address.strip().lower(),
                )
            )
    user.traits, user.traits_at = {}, None
    user.email = user.phone = user.timezone = user.locale = None
    user.phone_invalid = False
    user.erased_at = user.erased_at or now
    linked = select(Identity.anonymous_id).where(Identity.profile_id == user.id)
    scrubbed = await session.execute(
        update(Event)
        .where(
            (Event.profile_id == user.id)
            | (Event.user_id == user_id)
            | Event.anonymous_id.in_(linked)
        )
        .values(properties=None, traits=None, context=None)
    )
    # Copies of event properties kept for journeys and messages go too; journeys under way
    # end when they next wake. Device tokens identify the person's phone or browser: removed.
    await session.execute(
        update(Journey).where(Journey.profile_id == user.id).values(trigger_properties=None)
    )
    await session.execute(
        update(Message).where(Message.profile_id == user.id).values(variables=None)
    )
    await session.execute(delete(Device).where(Device.profile_id == user.id))
    return user, scrubbed.rowcount  # type: ignore[attr-defined]
