"""Consent: what each person agreed to receive, and the addresses nothing is sent to."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db import Base, BigId, UTCDateTime


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
