"""Profiles, their identities and devices, and the hashes of erased addresses."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db import Base, JSONType, UTCDateTime


class User(Base):
    """One profile per Segment userId. An erased profile keeps only its id and `erased_at`."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200), unique=True)
    traits: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    traits_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    phone_invalid: Mapped[bool] = mapped_column(default=False)
    timezone: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(35))
    first_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    erased_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Lifecycle (service.lifecycle): the current stage and the inactivity timer.
    stage: Mapped[str | None] = mapped_column(String(50))
    stage_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_active_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    inactivity_handled: Mapped[int] = mapped_column(default=0, server_default="0")  # seconds
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)


class Device(Base):
    """A push destination registered by a backend; disabled when the provider says it is gone."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(String(4096))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Identity(Base):
    """An anonymousId (or an aliased previous id) known to belong to a profile."""

    __tablename__ = "identities"

    anonymous_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    linked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ErasedAddress(Base):
    """SHA-256 of an erased person's email or phone, so they are never messaged again."""

    __tablename__ = "erased_addresses"

    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    erased_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
