"""Provider webhook events already applied, so a redelivery changes nothing."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db import Base, BigId, UTCDateTime


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
