"""Messages: one row per intended send, and every status it moved through."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db import Base, BigId, JSONType, UTCDateTime


class MessageStatus(StrEnum):
    """Where a message stands. It moves only forward through the progress states; the other
    states end it. A late or replayed report never moves a message back."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNSUBSCRIBED = "unsubscribed"

    @property
    def terminal(self) -> bool:
        return self not in _PROGRESS

    def can_move_to(self, new: MessageStatus) -> bool:
        """Whether a message in this status may move to `new` (status only moves forward)."""
        if self.terminal:
            return False
        return new.terminal or _PROGRESS.index(new) > _PROGRESS.index(self)


_PROGRESS = [
    MessageStatus.QUEUED,
    MessageStatus.SENDING,
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.OPENED,
    MessageStatus.CLICKED,
]


class Message(Base):
    """One intended send. `dedupe_key` (rule, version, step, user, journey) makes it unique, so
    however often a step runs, the message exists once."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_profile_created", "profile_id", "created_at"),
        Index("ix_messages_status_send_at", "status", "send_at"),
        # Delivery reports that name the message by the provider's id (service.delivery.receipts).
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
