"""The delivery admin endpoints' JSON bodies: subscriptions, the suppression list and
messages."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from service.kit.schemas import Schema

Channel = Literal["email", "sms", "push"]
Topic = Literal["acquisition", "activation", "retention", "recall", "*"]
SuppressibleChannel = Literal["email", "sms"]

# --- Subscriptions and the suppression list -----------------------------------------------


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    topic: Topic = Field(description="a rule category, or '*' for every topic of the channel")
    subscribed: StrictBool
    source: str = Field(default="api", min_length=1, max_length=50)


class SubscriptionOut(Schema):
    channel: str
    topic: str
    subscribed: bool
    source: str
    updated_at: dt.datetime


class SuppressionOut(Schema):
    channel: str
    address: str
    reason: str
    created_at: dt.datetime


class SubscriptionState(Schema):
    user_id: str
    subscriptions: list[SubscriptionOut] = Field(
        description="what the person said; a channel and topic not listed is subscribed"
    )
    suppressions: list[SuppressionOut] = Field(
        description="the user's own addresses on the suppression list"
    )


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: SuppressibleChannel
    address: str = Field(min_length=1, max_length=320)
    reason: Literal["unsubscribe", "hard_bounce", "complaint", "admin"] = Field(
        default="admin", description="another reason, e.g. when importing a provider's list"
    )


class Suppressions(Schema):
    suppressions: list[SuppressionOut]
    next_cursor: str | None


# --- Messages -------------------------------------------------------------------------------


class StatusChangeOut(Schema):
    status: str
    detail: str | None
    at: dt.datetime


class MessageOut(Schema):
    id: int
    user_id: str | None  # from a join: the row holds the profile's row id (MessageOut.of)
    rule_id: str | None = Field(alias="rule")
    rule_version: str | None
    step: int | None
    variant: str | None
    journey_id: int | None
    channel: str
    template: str
    to_address: str | None
    transactional: bool
    status: str
    status_reason: str | None
    status_at: dt.datetime | None
    send_at: dt.datetime
    created_at: dt.datetime
    attempts: int
    provider: str | None
    provider_message_id: str | None


class MessageDetail(MessageOut):
    history: list[StatusChangeOut]


class Messages(Schema):
    messages: list[MessageOut]
    next_cursor: str | None
