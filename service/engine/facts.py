"""What a rule's conditions see: the user, the trigger that set the rule off, and the user's
event history, queried only when a condition asks (count, first_time)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.engine import conditions, staff_format
from service.models import Event, User


@dataclass
class Trigger:
    """What set a rule off: an event, a stage change, inactivity or a schedule."""

    name: str
    properties: dict[str, Any]
    event_id: int | None = None
    description: str = ""


def user_facts(user: User) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "email": user.email,
        "phone": user.phone,
        "timezone": user.timezone,
        "locale": user.locale,
        "stage": user.stage,
        "traits": user.traits or {},
        "first_seen_at": user.first_seen_at,
    }


def facts_for(session: Session, user: User, now: dt.datetime, trigger: Trigger) -> conditions.Facts:
    def count(spec: staff_format.EventCount) -> int:
        query = select(Event.properties).where(
            Event.profile_id == user.id, Event.name == spec.event, Event.timestamp <= now
        )
        if spec.within is not None:
            query = query.where(Event.timestamp > now - spec.within)
        if spec.where is None:
            return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
        return sum(
            1
            for properties in session.scalars(query)
            if conditions.evaluate(spec.where, conditions.Facts(now, {}, properties or {}))
        )

    def first_time() -> bool:
        earlier = select(Event.id).where(
            Event.profile_id == user.id, Event.name == trigger.name, Event.id != trigger.event_id
        )
        return session.scalar(earlier.limit(1)) is None

    return conditions.Facts(
        now=now,
        user=user_facts(user),
        properties=trigger.properties,
        event_name=trigger.name,
        count=count,
        first_time=first_time,
    )
