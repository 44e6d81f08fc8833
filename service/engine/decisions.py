"""Why the engine did what it did: one decision row for every entry, refusal, send, wait and
end, written when the transaction commits."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from service.engine.index import CompiledRule
from service.kit.db import insert_at_commit
from service.models import Decision, Journey, User


def record(
    session: Session,
    user: User,
    at: dt.datetime,
    outcome: str,
    reason: str,
    *,
    compiled: CompiledRule | None = None,
    journey: Journey | None = None,
    event_id: int | None = None,
    message_id: int | None = None,
) -> None:
    insert_at_commit(
        session,
        Decision.__table__,
        {
            "profile_id": user.id,
            "rule_id": compiled.id if compiled else (journey.rule_id if journey else None),
            "rule_version": compiled.version
            if compiled
            else (journey.rule_version if journey else None),
            "journey_id": journey.id if journey else None,
            "event_id": event_id,
            "message_id": message_id,
            "outcome": outcome,
            "reason": reason,
            "at": at,
        },
    )


def end_journey(
    session: Session, user: User, journey: Journey, now: dt.datetime, reason: str
) -> None:
    journey.ended_at, journey.end_reason = now, reason
    journey.wake_at = journey.waiting_for = None
    record(session, user, now, "ended", reason, journey=journey)
