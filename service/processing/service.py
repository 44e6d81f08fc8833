"""Processing an accepted event: profile and identity now; lifecycle and rules plug in here.

Processing is idempotent: events are claimed with their row locks and marked processed in the
same transaction as everything processing changes, so a job delivered twice does nothing the
second time, and a worker that dies mid-way leaves the events for the sweeper.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.engine import entry
from service.engine.index import RuleIndex
from service.kit.db import Transaction, utcnow
from service.kit.jobs import PROCESS_EVENTS
from service.lifecycle import service as lifecycle
from service.models import Event, User
from service.processing.merge import merge_profile
from service.users import service as users

log = logging.getLogger(__name__)

SWEEP_BATCH = 1000
JOB_SIZE = 100  # events per job the sweep hands to the broker


def claim_unprocessed(session: Session, event_ids: list[int]) -> list[Event]:
    """Lock the events of `event_ids` still unprocessed; one held by another worker is skipped."""
    return list(
        session.scalars(
            select(Event)
            .where(Event.id.in_(event_ids), Event.processed_at.is_(None))
            .order_by(Event.timestamp, Event.id)
            .with_for_update(skip_locked=True)
        )
    )


def process_events(
    session: Session,
    event_ids: list[int],
    rules: RuleIndex | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Process what is still unprocessed of `event_ids`; returns how many were processed.

    `rules` is the live rule set (None: no rules folder); `now` is the clock (simulations
    pass a virtual one)."""
    events = claim_unprocessed(session, event_ids)
    if not events:
        return 0
    now = now or utcnow()
    first_seen: dict[str, dt.datetime] = {}
    for event in events:  # ordered by timestamp: the first one seen is the earliest
        if event.user_id:
            first_seen.setdefault(event.user_id, event.timestamp)
    profiles = users.lock_profiles(
        session, first_seen, also_existing={e.previous_id for e in events if e.previous_id}
    )
    anonymous = users.profiles_for_anonymous_ids(
        session, {e.anonymous_id for e in events if e.anonymous_id and not e.user_id}
    )
    for event in events:
        user = _process_one(session, event, profiles, anonymous)
        if user is not None and rules is not None:
            _run_rules(session, rules, user, event, now)
        event.processed_at = now
    log.debug("processed %d events", len(events))
    return len(events)


def _process_one(
    session: Session, event: Event, profiles: dict[str, User], anonymous: dict[str, User]
) -> User | None:
    """Profile and identity; returns the (not erased) profile the event belongs to."""
    user = profiles.get(event.user_id) if event.user_id else anonymous.get(event.anonymous_id or "")
    if user is None:
        return None  # anonymous and not linked yet: attached later, on identify or alias
    event.profile_id = user.id
    if user.erased_at is not None:
        event.properties = event.traits = event.context = None
        return None
    users.touch(user, event)
    if event.type == "identify" and event.traits:
        users.apply_traits(user, event.traits, event.timestamp)
    if event.anonymous_id and event.user_id:
        users.link_anonymous_id(session, event.anonymous_id, user, event.timestamp)
    if event.type == "alias" and event.previous_id:
        _alias(session, event.previous_id, user, profiles, event.timestamp)
    return user


def _run_rules(
    session: Session, rules: RuleIndex, user: User, event: Event, now: dt.datetime
) -> None:
    """Lifecycle stage, then the rules the event (and any stage change) sets off."""

    def count_recent(name: str, within: dt.timedelta) -> int:
        session.flush()
        query = select(func.count()).where(
            Event.profile_id == user.id,
            Event.name == name,
            Event.timestamp > event.timestamp - within,
            Event.timestamp <= event.timestamp,
        )
        return int(session.scalar(query) or 0)

    changes = lifecycle.on_event(
        session, user, event, rules.lifecycle, rules.thresholds(), count_recent
    )
    entry.handle_event(session, rules, user, event, changes, now)


def _alias(
    session: Session, previous_id: str, user: User, profiles: dict[str, User], at: dt.datetime
) -> None:
    previous = profiles.get(previous_id)
    if previous is not None and previous.id != user.id and previous.erased_at is None:
        session.flush()
        merge_profile(session, previous, user)
        profiles[previous_id] = user
    users.link_anonymous_id(session, previous_id, user, at)


def unprocessed_event_ids(session: Session, older_than: dt.datetime, limit: int) -> list[int]:
    """Claim events whose processing is overdue and mark them enqueued again (for the sweeper)."""
    ids = list(
        session.scalars(
            select(Event.id)
            .where(Event.processed_at.is_(None), Event.enqueued_at < older_than)
            .order_by(Event.enqueued_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(update(Event).where(Event.id.in_(ids)).values(enqueued_at=utcnow()))
    return ids


# --- Jobs: a group of events, and the sweep -------------------------------------------------


class ProcessingFailed(Exception):
    """Events of a group that could not be processed; they stay unprocessed."""


def process_group(transaction: Transaction, event_ids: list[int], rules: RuleIndex | None) -> None:
    """Process a group of events in one transaction. If the group fails, each event is tried
    on its own, so one event that cannot be processed does not hold up the others; raises
    ProcessingFailed naming those that still failed."""
    try:
        with transaction() as uow:
            process_events(uow.session, event_ids, rules)
        return
    except Exception:
        if len(event_ids) == 1:
            raise
        log.warning(
            "processing %d events together failed; trying each on its own",
            len(event_ids),
            exc_info=True,
        )
    failed = []
    for event_id in event_ids:
        try:
            with transaction() as uow:
                process_events(uow.session, [event_id], rules)
        except Exception:
            log.exception("event %d could not be processed; it stays unprocessed", event_id)
            failed.append(event_id)
    if failed:
        raise ProcessingFailed(f"events {failed} could not be processed; will retry")


def sweep_unprocessed(transaction: Transaction, grace_seconds: float) -> int:
    """Enqueue again the events not processed within `grace_seconds` of being enqueued (the
    broker lost them, or a crashed worker left them); returns how many. `transaction`'s jobs
    must go to the broker."""
    older_than = utcnow() - dt.timedelta(seconds=grace_seconds)
    total = 0
    while True:
        with transaction() as uow:
            ids = unprocessed_event_ids(uow.session, older_than, SWEEP_BATCH)
            for start in range(0, len(ids), JOB_SIZE):
                uow.enqueue(PROCESS_EVENTS, ids[start : start + JOB_SIZE])
        total += len(ids)
        if len(ids) < SWEEP_BATCH:
            break
    if total:
        log.warning("re-enqueued %d events not processed within %.0fs", total, grace_seconds)
    return total
