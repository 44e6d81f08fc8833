"""Work that comes due with time: journeys whose wait is over, users whose inactivity crossed a
threshold. The scheduler finds their ids, then handles each in its own transaction, locking
the user before the journey (the order event processing uses too, so the two never deadlock).
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.engine import entry, schedules, steps
from service.engine.facts import Trigger
from service.engine.index import RuleIndex
from service.kit.db import Transaction
from service.kit.durations import format_duration
from service.lifecycle import service as lifecycle
from service.models import Journey, User

log = logging.getLogger(__name__)

BATCH = 500  # due journeys, and due users, woken per tick


def due_journey_ids(session: Session, now: dt.datetime, limit: int) -> list[int]:
    query = select(Journey.id).where(Journey.wake_at <= now).order_by(Journey.wake_at).limit(limit)
    return list(session.scalars(query))


def due_user_ids(session: Session, now: dt.datetime, limit: int) -> list[int]:
    query = select(User.id).where(User.due_at <= now).order_by(User.due_at).limit(limit)
    return list(session.scalars(query))


def _lock_user(session: Session, profile_id: int) -> User | None:
    user: User | None = session.scalar(
        select(User).where(User.id == profile_id).with_for_update(skip_locked=True)
    )
    return user


def run_journey(session: Session, index: RuleIndex, journey_id: int, now: dt.datetime) -> bool:
    """Wake one due journey; False when another scheduler has it or it is no longer due."""
    profile_id = session.scalar(select(Journey.profile_id).where(Journey.id == journey_id))
    user = _lock_user(session, profile_id) if profile_id is not None else None
    if user is None:
        return False
    journey = session.scalar(
        select(Journey).where(Journey.id == journey_id).with_for_update(skip_locked=True)
    )
    if journey is None or journey.wake_at is None or journey.wake_at > now or journey.ended_at:
        return False
    steps.wake(session, index, journey, user, now)
    return True


def run_user(session: Session, index: RuleIndex, profile_id: int, now: dt.datetime) -> bool:
    """Inactivity for one user: stage changes and rules triggered by inactive_for."""
    user = _lock_user(session, profile_id)
    if user is None or user.due_at is None or user.due_at > now:
        return False
    changes, crossed = lifecycle.on_due(session, user, now, index.lifecycle, index.thresholds())
    if user.erased_at is not None:
        return True
    for change in changes:
        entry.handle_stage_change(session, index, user, change, now, budget=None)
    for compiled in index.on_inactivity:
        threshold = compiled.rule.trigger.inactive_for
        if threshold in crossed:
            trigger = Trigger(
                "inactive",
                {"inactive_for": format_duration(threshold)},
                None,
                f"inactive for {format_duration(threshold)}",
            )
            entry.try_enter(session, index, compiled, user, now, trigger, budget=None)
    return True


def wake_due(transaction: Transaction, index: RuleIndex, now: dt.datetime) -> int:
    """Wake every due journey and user, each in its own transaction, then fire the scheduled
    rules that are due; returns how many were handled."""
    handled = 0
    with transaction() as uow:
        journey_ids = due_journey_ids(uow.session, now, BATCH)
        user_ids = due_user_ids(uow.session, now, BATCH)
    for journey_id in journey_ids:
        with transaction() as uow:
            handled += run_journey(uow.session, index, journey_id, now)
    for user_id in user_ids:
        with transaction() as uow:
            handled += run_user(uow.session, index, user_id, now)
    if index.on_schedule:
        with transaction() as uow:
            handled += schedules.fire_due(uow.session, index, now)
    if handled:
        log.info("woke %d due journeys and users", handled)
    return handled
