"""Entering journeys: the rules an event or a stage change triggers compete for the send budget
by priority; each either enters the user (in its holdout, or in a variant) or records why not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from service.engine import conditions, matching, staff_format
from service.engine.decisions import record
from service.engine.facts import Trigger, facts_for
from service.engine.goals import journeys_see
from service.engine.index import CompiledRule, RuleIndex
from service.engine.planning import queued_in_transaction
from service.engine.steps import advance
from service.engine.versions import save_version
from service.kit.durations import format_duration
from service.kit.events import STAGE_CHANGED
from service.lifecycle.service import Change
from service.models import Event, Journey, User


@dataclass
class SendBudget:
    """How many more rules may send because of the event being processed."""

    remaining: int


def _bucket(*parts: str) -> float:
    """A stable number in [0, 1) for these parts: the same user and rule always land alike."""
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _variant(rule: staff_format.Rule, user_id: str) -> str | None:
    if not rule.variants:
        return None
    point = _bucket(user_id, rule.id, "variant") * sum(v.weight for v in rule.variants)
    for variant in rule.variants:
        point -= variant.weight
        if point < 0:
            return variant.id
    return rule.variants[-1].id


def handle_event(
    session: Session,
    index: RuleIndex,
    user: User,
    event: Event,
    changes: list[Change],
    now: dt.datetime,
) -> None:
    """Everything one processed event sets off for its user: the rules it and its stage
    changes trigger compete for the send budget by priority, whichever set them off."""
    budget = SendBudget(index.policy.max_sends_per_event)
    candidates: list[tuple[CompiledRule, Trigger]] = []
    if event.type == "track" and event.name:
        trigger = Trigger(event.name, event.properties or {}, event.id, f"event {event.name!r}")
        journeys_see(session, index, user, trigger, event.timestamp, now)
        candidates += [(c, trigger) for c in index.triggered_by_event(event.name)]
    for change in changes:
        trigger = _stage_trigger(change, event.id)
        journeys_see(session, index, user, trigger, event.timestamp, now)
        matched = index.triggered_by_stage_change(change.from_stage, change.to_stage)
        candidates += [(c, trigger) for c in matched]
    for compiled, trigger in sorted(candidates, key=lambda pair: -pair[0].rule.priority):
        try_enter(session, index, compiled, user, now, trigger, budget)


def _stage_trigger(change: Change, event_id: int | None) -> Trigger:
    properties = {"from": change.from_stage, "to": change.to_stage, "cause": change.cause}
    return Trigger(
        STAGE_CHANGED, properties, event_id, f"stage {change.from_stage} -> {change.to_stage}"
    )


def handle_stage_change(
    session: Session,
    index: RuleIndex,
    user: User,
    change: Change,
    now: dt.datetime,
    budget: SendBudget | None,
    event_id: int | None = None,
) -> None:
    trigger = _stage_trigger(change, event_id)
    journeys_see(session, index, user, trigger, now, now)
    for compiled in index.triggered_by_stage_change(change.from_stage, change.to_stage):
        try_enter(session, index, compiled, user, now, trigger, budget)


def try_enter(
    session: Session,
    index: RuleIndex,
    compiled: CompiledRule,
    user: User,
    now: dt.datetime,
    trigger: Trigger,
    budget: SendBudget | None,
) -> Journey | None:
    """Enter `user` into the rule if it applies; every refusal is recorded with its reason."""
    rule = compiled.rule
    if user.erased_at is not None:
        return None
    holdout = _bucket(user.user_id, rule.id, "holdout") * 100 < rule.holdout
    key, reason = _key_or_refusal(session, compiled, user, now, trigger)
    at_limit = budget is not None and budget.remaining <= 0
    if reason is None and not holdout and at_limit and compiled.sends_at_once():
        reason = (
            f"max_sends_per_event ({index.policy.max_sends_per_event}) already reached "
            "by rules of higher priority"
        )
    if reason is not None:
        record(
            session,
            user,
            now,
            "not_entered",
            f"{trigger.description}: {reason}",
            compiled=compiled,
            event_id=trigger.event_id,
        )
        return None
    journey = _start(session, compiled, user, now, trigger, key, holdout)
    if holdout:
        journey.ended_at, journey.end_reason = now, "holdout"
        reason = f"{trigger.description}: kept out for measurement ({rule.holdout:g}% holdout)"
    else:
        reason = trigger.description + (f", variant {journey.variant}" if journey.variant else "")
    outcome = "holdout" if holdout else "entered"
    record(
        session,
        user,
        now,
        outcome,
        reason,
        compiled=compiled,
        journey=journey,
        event_id=trigger.event_id,
    )
    if not holdout:
        _advance_and_count_send(session, index, compiled, journey, user, now, budget)
    return journey


def _key_or_refusal(
    session: Session, compiled: CompiledRule, user: User, now: dt.datetime, trigger: Trigger
) -> tuple[str, str | None]:
    """The journey's key (empty for a rule without `key`), and why the user may not enter
    (None: they may)."""
    rule = compiled.rule
    reason = matching.refusal(compiled, facts_for(session, user, now, trigger))
    if reason:
        return "", reason
    key = ""
    if rule.key is not None:
        value = conditions.lookup(trigger.properties, rule.key)
        if value is conditions.MISSING or value is None:
            return "", f"the event has no {rule.key!r} to key the journey on"
        key = str(value)
    return key, _entry_refusal(session, rule, user, key, now)


def _start(
    session: Session,
    compiled: CompiledRule,
    user: User,
    now: dt.datetime,
    trigger: Trigger,
    key: str,
    holdout: bool,
) -> Journey:
    """The new journey, at its first step."""
    rule = compiled.rule
    save_version(session, compiled, now)
    # Inserted on its own for its id: the batch's pending users and events are written
    # together later, not flushed here one event at a time.
    with session.no_autoflush:
        return session.scalars(
            insert(Journey).returning(Journey),
            [
                {
                    "profile_id": user.id,
                    "rule_id": rule.id,
                    "rule_version": compiled.version,
                    "journey_key": key,
                    "trigger_event_id": trigger.event_id,
                    "trigger_properties": trigger.properties,
                    "variant": _variant(rule, user.user_id),
                    "holdout": holdout,
                    "pc": 0,
                    "entered_at": now,
                    "goal_deadline": now + rule.goal.within if rule.goal else None,
                }
            ],
        ).one()


def _advance_and_count_send(
    session: Session,
    index: RuleIndex,
    compiled: CompiledRule,
    journey: Journey,
    user: User,
    now: dt.datetime,
    budget: SendBudget | None,
) -> None:
    """Run the new journey's first steps; a message they queue spends the event's budget."""
    advance(session, index, compiled, journey, user, now)
    # The budget counts rules that did send: one whose every channel was refused (no
    # address, a cap) leaves the send to the next rule.
    queued = queued_in_transaction(session, journey.id)
    if budget is not None and compiled.sends_at_once() and queued:
        budget.remaining -= 1


def _entry_refusal(
    session: Session, rule: staff_format.Rule, user: User, key: str, now: dt.datetime
) -> str | None:
    # New journeys are flushed when created; only a journey of this rule ended earlier in the
    # transaction needs writing first. Flushing the whole session here instead would write
    # the batch's users and events one event at a time.
    if any(
        isinstance(o, Journey) and o.profile_id == user.id and o.rule_id == rule.id
        for o in session.dirty
    ):
        session.flush()
    with session.no_autoflush:
        active, last = session.execute(
            select(
                func.count().filter(Journey.journey_key == key, Journey.ended_at.is_(None)),
                func.max(Journey.entered_at),
            ).where(Journey.profile_id == user.id, Journey.rule_id == rule.id)
        ).one()
    if active:
        return "already in this journey" + (f" for {rule.key} {key!r}" if rule.key else "")
    if rule.entry == "every_time" or last is None:
        return None
    if rule.entry == "once":
        return f"entry is once, and the user entered on {last:%Y-%m-%d %H:%M} UTC"
    assert isinstance(rule.entry, staff_format.Entry)
    if last > now - rule.entry.once_per:
        return (
            f"entry is once per {format_duration(rule.entry.once_per)}, and the user "
            f"entered on {last:%Y-%m-%d %H:%M} UTC"
        )
    return None
