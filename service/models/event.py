"""Where events come from (sources and their write keys) and the events themselves."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db import Base, BigId, JSONType, UTCDateTime


class Source(Base):
    """A product backend that sends events, identified by its write key (stored hashed)."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Event(Base):
    """One accepted Segment call, exactly as sent, plus where it stands in processing.

    `name` holds the track event name or the page/screen name. `profile_id` is the profile the
    event was resolved to (an anonymous event gets one once its anonymousId is linked).
    """

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source_id", "message_id", name="uq_events_source_message"),
        Index("ix_events_profile_timeline", "profile_id", "id"),
        Index("ix_events_anonymous_id", "anonymous_id"),
        Index(
            "ix_events_unprocessed",
            "enqueued_at",
            postgresql_where=text("processed_at IS NULL"),
            sqlite_where=text("processed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    message_id: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
    user_id: Mapped[str | None] = mapped_column(String(200))
    anonymous_id: Mapped[str | None] = mapped_column(String(200))
    previous_id: Mapped[str | None] = mapped_column(String(200))
    group_id: Mapped[str | None] = mapped_column(String(200))
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    traits: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    context: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    integrations: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    original_timestamp: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    timestamp: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    enqueued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
