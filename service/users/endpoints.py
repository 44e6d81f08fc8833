"""Admin API for profiles: read a profile and its timeline, erase a person, register the
person's push devices."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from service.kit import pagination
from service.kit.auth import require_admin
from service.kit.db import async_unit_of_work
from service.kit.http import no_user
from service.kit.state import AppState
from service.models import Device, Event, StageChange, User
from service.users import devices, service

router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=[Depends(require_admin)])


class StageChangeOut(BaseModel):
    fromStage: str | None
    toStage: str
    at: dt.datetime
    cause: str


class DecisionOut(BaseModel):
    id: int
    at: dt.datetime
    outcome: str
    reason: str
    rule: str | None
    ruleVersion: str | None
    journeyId: int | None
    eventId: int | None


class Decisions(BaseModel):
    decisions: list[DecisionOut]
    next_cursor: str | None


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
    stage: str | None
    stageSince: dt.datetime | None
    stageHistory: list[StageChangeOut]


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


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.lifeline
    return state


def _profile(user: User, anonymous_ids: list[str], history: list[StageChange]) -> Profile:
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
        stage=user.stage,
        stageSince=user.stage_since,
        stageHistory=[
            StageChangeOut(fromStage=c.from_stage, toStage=c.to_stage, at=c.at, cause=c.cause)
            for c in history
        ],
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


@router.get("/{user_id}", response_model=Profile, summary="A user's profile")
async def get_user(user_id: str, request: Request) -> Profile:
    async with async_unit_of_work(_state(request).engine) as uow:
        user = await service.get_profile(uow.session, user_id)
        if user is None:
            raise no_user(user_id)
        return _profile(
            user,
            await service.anonymous_ids(uow.session, user.id),
            await service.stage_history(uow.session, user.id),
        )


@router.get("/{user_id}/events", response_model=Timeline, summary="A user's events, newest first")
async def get_user_events(
    user_id: str,
    request: Request,
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
) -> Timeline:
    before_id = pagination.before_id(cursor)
    async with async_unit_of_work(_state(request).engine) as uow:
        user = await service.get_profile(uow.session, user_id)
        if user is None:
            raise no_user(user_id)
        events = await service.timeline(uow.session, user.id, before_id, limit + 1)
    events, next_cursor = pagination.page(events, limit, lambda e: e.id)
    return Timeline(events=[_event(e) for e in events], next_cursor=next_cursor)


@router.get(
    "/{user_id}/decisions",
    response_model=Decisions,
    summary="Why the user got, or did not get, each message: every rule decision, newest first",
)
async def get_user_decisions(
    user_id: str,
    request: Request,
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
) -> Decisions:
    before_id = pagination.before_id(cursor)
    async with async_unit_of_work(_state(request).engine) as uow:
        user = await service.get_profile(uow.session, user_id)
        if user is None:
            raise no_user(user_id)
        rows = await service.decisions(uow.session, user.id, before_id, limit + 1)
    rows, next_cursor = pagination.page(rows, limit, lambda d: d.id)
    return Decisions(
        decisions=[
            DecisionOut(
                id=d.id,
                at=d.at,
                outcome=d.outcome,
                reason=d.reason,
                rule=d.rule_id,
                ruleVersion=d.rule_version,
                journeyId=d.journey_id,
                eventId=d.event_id,
            )
            for d in rows
        ],
        next_cursor=next_cursor,
    )


# --- Push devices ------------------------------------------------------------------------------

WEB_SUBSCRIPTION_SCHEMA = {
    "type": "object",
    "description": "web: the browser's PushSubscription (subscription.toJSON())",
    "properties": {
        "endpoint": {"type": "string", "format": "uri"},
        "keys": {
            "type": "object",
            "properties": {"p256dh": {"type": "string"}, "auth": {"type": "string"}},
            "required": ["p256dh", "auth"],
        },
    },
    "required": ["endpoint", "keys"],
}


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: devices.Platform
    token: Annotated[
        str,
        WithJsonSchema(
            {
                "anyOf": [
                    {
                        "type": "string",
                        "description": "ios: APNs device token (hex); "
                        "android: FCM registration token",
                    },
                    WEB_SUBSCRIPTION_SCHEMA,
                ]
            }
        ),
    ] = Field(description="the device's push token; for web, the PushSubscription")

    @field_validator("token", mode="before")
    @classmethod
    def _valid_token(cls, value: object, info: ValidationInfo) -> str:
        platform = info.data.get("platform")
        if platform is None:  # the platform's own error says what is wrong
            return str(value)
        try:
            return devices.normalise_token(platform, value)
        except devices.InvalidToken as exc:
            raise PydanticCustomError("invalid_token", str(exc)) from None


class DeviceOut(BaseModel):
    id: int
    platform: str
    tokenHint: str = Field(description="the token's last characters; for web, the push service")
    enabled: bool
    createdAt: dt.datetime = Field(description="when it was registered to this user")
    disabledAt: dt.datetime | None = Field(
        description="when the push service said the token no longer works"
    )


class Devices(BaseModel):
    userId: str
    devices: list[DeviceOut] = Field(description="newest first; push goes to the newest enabled")


def _device(device: Device) -> DeviceOut:
    return DeviceOut(
        id=device.id,
        platform=device.platform,
        tokenHint=devices.hint(device),
        enabled=device.disabled_at is None,
        createdAt=device.created_at,
        disabledAt=device.disabled_at,
    )


@router.get("/{user_id}/devices", response_model=Devices, summary="A user's push devices")
async def list_devices(user_id: str, request: Request) -> Devices:
    async with async_unit_of_work(_state(request).engine) as uow:
        user = await service.get_profile(uow.session, user_id)
        if user is None:
            raise no_user(user_id)
        rows = await devices.devices(uow.session, user.id)
    return Devices(userId=user_id, devices=[_device(d) for d in rows])


@router.post(
    "/{user_id}/devices",
    response_model=DeviceOut,
    status_code=201,
    summary="Register a push device (201); 200 when it was known: it is enabled again, and a "
    "device registered to another user moves to this one (someone else logged in on it)",
)
async def register_device(
    user_id: str, device: DeviceIn, request: Request, response: Response
) -> DeviceOut:
    async with async_unit_of_work(_state(request).engine) as uow:
        user = await service.get_profile(uow.session, user_id)
        if user is None:
            raise no_user(user_id)
        if user.erased_at is not None:
            raise HTTPException(status_code=409, detail=f"user {user_id!r} was erased")
        row, created = await devices.register(uow.session, user, device.platform, device.token)
        if not created:
            response.status_code = 200
        return _device(row)


@router.delete(
    "/{user_id}/devices",
    status_code=204,
    summary="Remove a device by its token (e.g. at log-out); the body is the one registered",
)
async def remove_device_by_token(user_id: str, device: DeviceIn, request: Request) -> Response:
    async with async_unit_of_work(_state(request).engine) as uow:
        user = await service.get_profile(uow.session, user_id)
        if user is None:
            raise no_user(user_id)
        removed = await devices.remove_token(uow.session, user.id, device.platform, device.token)
    if not removed:
        raise HTTPException(status_code=404, detail=f"no such device of user {user_id!r}")
    return Response(status_code=204)


@router.delete(
    "/{user_id}/devices/{device_id}", status_code=204, summary="Remove a device by its id"
)
async def remove_device(user_id: str, device_id: int, request: Request) -> Response:
    async with async_unit_of_work(_state(request).engine) as uow:
        user = await service.get_profile(uow.session, user_id)
        if user is None:
            raise no_user(user_id)
        removed = await devices.remove(uow.session, user.id, device_id)
    if not removed:
        raise HTTPException(status_code=404, detail=f"no device {device_id} of user {user_id!r}")
    return Response(status_code=204)
