"""What the rule engine keeps: rule versions, journeys and the decisions that explain them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db import Base, BigId, JSONType, UTCDateTime


class RuleVersion(Base):
    """A rule exactly as it was when a journey entered it, so the journey can finish on it."""

    __tablename__ = "rule_versions"

    rule_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[str] = mapped_column(String(12), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    first_loaded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Journey(Base):
    """One user's way through one rule. Active while `ended_at` is unset."""

    __tablename__ = "journeys"
    __table_args__ = (
        # At most one active journey per user, rule and key.
        Index(
            "uq_journeys_active",
            "profile_id",
            "rule_id",
            "journey_key",
            unique=True,
            postgresql_where=text("ended_at IS NULL"),
            sqlite_where=text("ended_at IS NULL"),
        ),
        Index("ix_journeys_profile_rule", "profile_id", "rule_id", "entered_at"),
        Index(
            "ix_journeys_due",
            "wake_at",
            postgresql_where=text("wake_at IS NOT NULL"),
            sqlite_where=text("wake_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    rule_id: Mapped[str] = mapped_column(String(100))
    rule_version: Mapped[str] = mapped_column(String(12))
    journey_key: Mapped[str] = mapped_column(String(200), default="")
    trigger_event_id: Mapped[int | None] = mapped_column(BigId)
    trigger_properties: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    variant: Mapped[str | None] = mapped_column(String(50))
    holdout: Mapped[bool] = mapped_column(default=False)
    pc: Mapped[int] = mapped_column(default=0)
    wake_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    waiting_for: Mapped[str | None] = mapped_column(String(200))
    entered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    goal_deadline: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    converted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    end_reason: Mapped[str | None] = mapped_column(String(200))


class Decision(Base):
    """Why something happened or did not: every outcome that matters, with its rule version."""

    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_profile", "profile_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    rule_id: Mapped[str | None] = mapped_column(String(100))
    rule_version: Mapped[str | None] = mapped_column(String(12))
    journey_id: Mapped[int | None] = mapped_column(BigId)
    event_id: Mapped[int | None] = mapped_column(BigId)
    message_id: Mapped[int | None] = mapped_column(BigId)
    outcome: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ScheduleRun(Base):
    """When a scheduled rule last fired in one timezone (cron times are the users' own)."""

    __tablename__ = "schedule_runs"

    rule_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    timezone: Mapped[str] = mapped_column(String(64), primary_key=True)
    cron: Mapped[str] = mapped_column(String(100))
    last_fired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
