from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.ingest.models import BigId
from service.kit.db import Base, JSONType, UTCDateTime

SEND_MESSAGE = "send_message"  # the actor that sends one message, by id

# Delivery reports become events on the person's timeline, named as in Segment's spec where it
# has one ("Email Opened", "Email Marked as Spam", "Unsubscribed"), and alike for SMS and push.
# Rules may use them without listing them in events.yaml; they never count as the person's
# activity (a delivered win-back email does not bring anyone back).
REPORT_EVENTS: dict[tuple[str, str], str] = {
    **{
        (channel, status): f"{prefix} {what}"
        for channel, prefix in (("email", "Email"), ("sms", "SMS"), ("push", "Push"))
        for status, what in (
            ("delivered", "Delivered"),
            ("opened", "Opened"),
            ("clicked", "Link Clicked"),
            ("bounced", "Bounced"),
            ("complained", "Marked as Spam"),
        )
    },
    **{(channel, "unsubscribed"): "Unsubscribed" for channel in ("email", "sms", "push")},
}
REPORT_EVENT_NAMES = frozenset(REPORT_EVENTS.values())


class Message(Base):
    """One intended send. `dedupe_key` (rule, version, step, user, journey) makes it unique, so
    however often a step runs, the message exists once."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_profile_created", "profile_id", "created_at"),
        Index("ix_messages_status_send_at", "status", "send_at"),
        # Delivery reports that name the message by the provider's id (service.delivery.reports).
        Index("ix_messages_provider_message", "provider", "provider_message_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(300), unique=True)
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    journey_id: Mapped[int | None] = mapped_column(BigId)
    rule_id: Mapped[str | None] = mapped_column(String(100))
    rule_version: Mapped[str | None] = mapped_column(String(12))
    step: Mapped[int | None] = mapped_column()
    variant: Mapped[str | None] = mapped_column(String(50))
    channel: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(200))
    to_address: Mapped[str | None] = mapped_column(String(4096))
    transactional: Mapped[bool] = mapped_column(default=False)
    variables: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    send_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Delivery: the last hand-off to the broker, the claim before the provider call, attempts.
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    provider: Mapped[str | None] = mapped_column(String(100))
    provider_message_id: Mapped[str | None] = mapped_column(String(300))


class MessageStatusChange(Base):
    """A message's status history: every move, with its time and detail."""

    __tablename__ = "message_status_changes"
    __table_args__ = (Index("ix_message_status_changes_message", "message_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Subscription(Base):
    """A profile's stated wish for one channel and topic (a rule's category), or for every
    topic of the channel (`topic` '*'). No row means subscribed: the rules decide who gets
    marketing, this table records who said no (or yes again), how and when."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint(
            "profile_id", "channel", "topic", name="uq_subscriptions_profile_channel_topic"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    topic: Mapped[str] = mapped_column(String(50))
    subscribed: Mapped[bool] = mapped_column()
    source: Mapped[str] = mapped_column(String(50))  # api, unsubscribe_link, preference_page
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Suppression(Base):
    """An address nothing is sent to, whoever it belongs to: unsubscribed from everything, a
    hard bounce, a complaint, or an operator's decision. Addresses are stored normalised
    (email lower-cased, phone E.164), so one address has one row."""

    __tablename__ = "suppressions"
    __table_args__ = (
        UniqueConstraint("channel", "address", name="uq_suppressions_channel_address"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(16))  # unsubscribe, hard_bounce, complaint, admin
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class WebhookEvent(Base):
    """A provider event already applied, by the provider's own event id: a webhook delivered
    again (providers retry until they get a 2xx) changes nothing the second time."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("account", "event_id", name="uq_webhook_events_account_event"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(100))
    event_id: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
