"""The users endpoints' JSON bodies: profiles, timelines, decisions and push devices."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from service.kit.schemas import Schema
from service.models import Device, StageChange, User
from service.users import devices


class StageChangeOut(Schema):
    from_stage: str | None
    to_stage: str
    at: dt.datetime
    cause: str


class ProfileOut(Schema):
    user_id: str
    traits: dict[str, Any]
    email: str | None
    phone: str | None
    phone_invalid: bool
    timezone: str | None
    locale: str | None
    anonymous_ids: list[str]
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    erased_at: dt.datetime | None
    stage: str | None
    stage_since: dt.datetime | None
    stage_history: list[StageChangeOut]

    @classmethod
    def of_user(
        cls, user: User, anonymous_ids: list[str], history: list[StageChange]
    ) -> ProfileOut:
        return cls.of(
            user, traits=user.traits or {}, anonymous_ids=anonymous_ids, stage_history=history
        )


class TimelineEvent(Schema):
    id: int
    message_id: str
    type: str
    name: str | None
    user_id: str | None
    anonymous_id: str | None
    properties: dict[str, Any] | None
    traits: dict[str, Any] | None
    context: dict[str, Any] | None
    timestamp: dt.datetime
    original_timestamp: dt.datetime | None
    sent_at: dt.datetime | None
    received_at: dt.datetime
    processed_at: dt.datetime | None


class Timeline(Schema):
    events: list[TimelineEvent]
    next_cursor: str | None


class DecisionOut(Schema):
    id: int
    at: dt.datetime
    outcome: str
    reason: str
    rule_id: str | None = Field(alias="rule")
    rule_version: str | None
    journey_id: int | None
    event_id: int | None


class Decisions(Schema):
    decisions: list[DecisionOut]
    next_cursor: str | None


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


class DeviceOut(Schema):
    id: int
    platform: str
    token_hint: str = Field(description="the token's last characters; for web, the push service")
    enabled: bool
    created_at: dt.datetime = Field(description="when it was registered to this user")
    disabled_at: dt.datetime | None = Field(
        description="when the push service said the token no longer works"
    )

    @classmethod
    def of_device(cls, device: Device) -> DeviceOut:
        return cls.of(device, token_hint=devices.hint(device), enabled=device.disabled_at is None)


class Devices(Schema):
    user_id: str
    devices: list[DeviceOut] = Field(description="newest first; push goes to the newest enabled")
