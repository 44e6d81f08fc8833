"""Lifecycle stage changes: who moved from which stage to which, when and why."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db import Base, BigId, UTCDateTime


class StageChange(Base):
    """A user moved from one lifecycle stage to another, and why."""

    __tablename__ = "stage_changes"
    __table_args__ = (Index("ix_stage_changes_profile", "profile_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    from_stage: Mapped[str | None] = mapped_column(String(50))
    to_stage: Mapped[str] = mapped_column(String(50))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    cause: Mapped[str] = mapped_column(String(300))
