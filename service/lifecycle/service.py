"""Keeping each user's lifecycle stage current.

On every event the stage moves forward (new -> activated -> engaged; at_risk or churned ->
recalled). Inactivity is found by a per-user due time (`users.due_at`): the scheduler looks
only at users whose next inactivity threshold has passed, never rescanning everyone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.kit.durations import format_duration as fmt
from service.kit.events import REPORT_EVENT_NAMES
from service.lifecycle.staff_format import Lifecycle
from service.models import Event, StageChange, User

ACTIVITY_TYPES = ("track", "page", "screen")


@dataclass(frozen=True)
class Change:
    from_stage: str | None
    to_stage: str
    cause: str


def is_activity(event: Event, lifecycle: Lifecycle) -> bool:
    if event.type not in ACTIVITY_TYPES or event.name in REPORT_EVENT_NAMES:
        return False
    return not (event.type == "track" and event.name in lifecycle.not_activity)


def _move(session: Session, user: User, to: str, cause: str, at: dt.datetime) -> Change | None:
    if user.stage == to:
        return None
    change = Change(user.stage, to, cause)
    session.add(
        StageChange(profile_id=user.id, from_stage=user.stage, to_stage=to, at=at, cause=cause)
    )
    user.stage, user.stage_since = to, at
    return change


def on_event(
    session: Session,
    user: User,
    event: Event,
    lifecycle: Lifecycle,
    thresholds: Sequence[dt.timedelta],
    count_recent: Callable[[str, dt.timedelta], int],
) -> list[Change]:
    """The stage changes `event` causes. `thresholds` are every inactivity duration anything
    acts on (lifecycle's and rules' inactive_for), for the next due time."""
    at = event.timestamp
    changes: list[Change | None] = []
    if user.stage is None:
        changes.append(_move(session, user, lifecycle.name("new"), "first seen", at))
    if not is_activity(event, lifecycle):
        return [c for c in changes if c]
    if user.last_active_at is None or at >= user.last_active_at:
        user.last_active_at = at
        user.inactivity_handled = 0
        user.due_at = at + min(thresholds) if thresholds else None
    name = lifecycle.name
    cause = f"event {event.name or event.type!r}"
    if user.stage in (name("at_risk"), name("churned")):
        changes.append(_move(session, user, name("recalled"), f"came back: {cause}", at))
    if user.activated_at is None and event.name == lifecycle.activation.event:
        user.activated_at = at
        if user.stage == name("new"):
            changes.append(_move(session, user, name("activated"), f"activation {cause}", at))
    engagement = lifecycle.engagement
    if user.stage in (name("activated"), name("recalled")) and event.name == engagement.event:
        done = count_recent(engagement.event, engagement.within)
        if done >= engagement.at_least:
            reason = f"{done}x {engagement.event!r} within {fmt(engagement.within)}"
            changes.append(_move(session, user, name("engaged"), reason, at))
    return [c for c in changes if c]


def on_due(
    session: Session,
    user: User,
    now: dt.datetime,
    lifecycle: Lifecycle,
    thresholds: Sequence[dt.timedelta],
) -> tuple[list[Change], list[dt.timedelta]]:
    """Inactivity: stage changes, and the thresholds crossed since the last check (for rules
    triggered by inactive_for). Sets the next due time."""
    if user.last_active_at is None:
        user.due_at = None
        return [], []
    inactive = now - user.last_active_at
    handled = dt.timedelta(seconds=user.inactivity_handled)
    crossed = [t for t in sorted(set(thresholds)) if handled < t <= inactive]
    user.inactivity_handled = int(inactive.total_seconds())
    later = [t for t in sorted(set(thresholds)) if t > inactive]
    user.due_at = user.last_active_at + later[0] if later else None
    at_risk_after, churned_after = lifecycle.thresholds
    name = lifecycle.name
    changes: list[Change | None] = []
    if inactive >= churned_after:
        changes.append(
            _move(
                session,
                user,
                name("churned"),
                f"inactive for {fmt(churned_after)}",
                user.last_active_at + churned_after,
            )
        )
    elif inactive >= at_risk_after and user.stage not in (name("at_risk"), name("churned")):
        changes.append(
            _move(
                session,
                user,
                name("at_risk"),
                f"inactive for {fmt(at_risk_after)}",
                user.last_active_at + at_risk_after,
            )
        )
    return [c for c in changes if c], crossed
