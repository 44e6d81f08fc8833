"""Merging two profiles found to be one person (alias): it reaches into every domain's rows,
so it sits above them."""

from __future__ import annotations

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from service.delivery import consent
from service.kit.db import Base, utcnow
from service.models import Journey, User
from service.users import profile as fields


def merge_profile(session: Session, old: User, into: User) -> None:
    """alias(previousId=old, userId=new) when both have profiles: the new one takes it all."""
    if old.id == into.id:
        return
    # A journey both profiles are on stays with `into`; the old one ends. Then everything that
    # belongs to the old profile (events, journeys, decisions, messages, ...) moves over.
    active = select(Journey.rule_id, Journey.journey_key).where(
        Journey.profile_id == into.id, Journey.ended_at.is_(None)
    )
    session.execute(
        update(Journey)
        .where(
            Journey.profile_id == old.id,
            Journey.ended_at.is_(None),
            tuple_(Journey.rule_id, Journey.journey_key).in_(active),
        )
        .values(ended_at=utcnow(), end_reason=f"profile merged into {into.user_id!r}")
    )
    consent.merge_subscriptions(session, old.id, into.id)
    for table in Base.metadata.sorted_tables:
        if "profile_id" in table.c:
            session.execute(
                update(table).where(table.c.profile_id == old.id).values(profile_id=into.id)
            )
    into.traits, into.traits_at = fields.merge_traits(
        old.traits or {}, old.traits_at, into.traits or {}, into.traits_at or into.last_seen_at
    )
    into.first_seen_at = min(into.first_seen_at, old.first_seen_at)
    into.last_seen_at = max(into.last_seen_at, old.last_seen_at)
    into.email = into.email or old.email
    into.phone = into.phone or old.phone
    into.timezone = into.timezone or old.timezone
    into.locale = into.locale or old.locale
    session.delete(old)
