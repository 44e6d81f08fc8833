"""Admin API for profiles: read a profile and its timeline, erase a person."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel

from service.ingest.models import Event
from service.kit.auth import require_admin
from service.kit.db import async_unit_of_work
from service.kit.state import AppState
from service.users import service
from service.users.models import User

router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=[Depends(require_admin)])


class Profile(BaseModel):
    userId: str
    traits: dict[str, Any]
    email: str | None
    phone: str | None
    phoneInvalid: bool
    timezone: str | None
    locale: str | None
    anonymousIds: list[str]
    firstSeenAt: dt.datetime
    lastSeenAt: dt.datetime
    erasedAt: dt.datetime | None
    stage: str | None = None


class TimelineEvent(BaseModel):
    id: int
    messageId: str
    type: str
    name: str | None
    userId: str | None
    anonymousId: str | None
    properties: dict[str, Any] | None
    traits: dict[str, Any] | None
    context: dict[str, Any] | None
    timestamp: dt.datetime
    originalTimestamp: dt.datetime | None
    sentAt: dt.datetime | None
    receivedAt: dt.datetime
    processedAt: dt.datetime | None


class Timeline(BaseModel):
    events: list[TimelineEvent]
    next_cursor: str | None


class Erased(BaseModel):
    userId: str
    erasedAt: dt.datetime
    eventsScrubbed: int


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.lifeline
    return state


def _profile(user: User, anonymous_ids: list[str]) -> Profile:
    return Profile(
        userId=user.user_id,
        traits=user.traits or {},
        email=user.email,
        phone=user.phone,
        phoneInvalid=user.phone_invalid,
        timezone=user.timezone,
        locale=user.locale,
        anonymousIds=anonymous_ids,
        firstSeenAt=user.first_seen_at,
        lastSeenAt=user.last_seen_at,
        erasedAt=user.erased_at,
    )


def _event(event: Event) -> TimelineEvent:
    return TimelineEvent(
        id=event.id,
        messageId=event.message_id,
        type=event.type,
        name=event.name,
        userId=event.user_id,
        anonymousId=event.anonymous_id,
        properties=event.properties,
        traits=event.traits,
        context=event.context,
        timestamp=event.timestamp,
        originalTimestamp=event.original_timestamp,
        sentAt=event.sent_at,
        receivedAt=event.received_at,
        processedAt=event.processed_at,
    )


def _not_found(user_id: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"no user {user_id!r}")


@router.get("/{user_id}", response_model=Profile, summary="A user's profile")
async def get_user(user_id: str, request: Request) -> Profile:
    async with async_unit_of_work(_state(request).engine) as uow:
        user = await service.get_profile(uow.session, user_id)
        if user is None:
            raise _not_found(user_id)
        return _profile(user, await service.anonymous_ids(uow.session, user.id))


@router.get("/{user_id}/events", response_model=Timeline, summary="A user's events, newest first")
async def get_user_events(
    user_id: str,
    request: Request,
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
) -> Timeline:
    before_id = None
    if cursor is not None:
        if not cursor.isdigit():
            raise HTTPException(status_code=400, detail="cursor: not a cursor from this API")
        before_id = int(cursor)
    async with async_unit_of_work(_state(request).engine) as uow:
        user = await service.get_profile(uow.session, user_id)
        if user is None:
            raise _not_found(user_id)
        events = await service.timeline(uow.session, user.id, before_id, limit + 1)
    more = len(events) > limit
    events = events[:limit]
    return Timeline(
        events=[_event(e) for e in events],
        next_cursor=str(events[-1].id) if more else None,
    )


@router.delete("/{user_id}", response_model=Erased, summary="Erase a person's personal data")
async def delete_user(user_id: str, request: Request) -> Erased:
    async with async_unit_of_work(_state(request).engine) as uow:
        user, scrubbed = await service.erase(uow.session, user_id)
    assert user.erased_at is not None
    return Erased(userId=user.user_id, erasedAt=user.erased_at, eventsScrubbed=scrubbed)
