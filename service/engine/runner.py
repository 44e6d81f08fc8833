"""The rule engine at work: entering journeys, running their steps, recording why.

Everything here runs inside the caller's transaction (an event being processed, or a due
journey or user being woken by the scheduler) and takes `now` from the caller, so the same
code runs the live service and `lifeline rules simulate`'s virtual clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import weakref
import zoneinfo
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, func, insert, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.engine import conditions, matching, program, staff_format
from service.engine.index import CompiledRule, RuleIndex, compile_rule
from service.kit.db import enqueue_id_after_commit, insert_at_commit, insert_ignoring_conflicts
from service.kit.durations import format_duration
from service.kit.events import STAGE_CHANGED
from service.kit.jobs import SEND_MESSAGE
from service.lifecycle.service import Change
from service.models import (
    Decision,
    Device,
    Event,
    Journey,
    Message,
    MessageStatusChange,
    RuleVersion,
    User,
)


@dataclass
class SendBudget:
    """How many more rules may send because of the event being processed."""

    remaining: int


@dataclass
class Trigger:
    """What set a rule off: an event, a stage change, inactivity or a schedule."""

    name: str
    properties: dict[str, Any]
    event_id: int | None = None
    description: str = ""


QUEUED_BY = "lifeline.journeys-that-queued"  # in this transaction


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


def user_facts(user: User) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "email": user.email,
        "phone": user.phone,
        "timezone": user.timezone,
        "locale": user.locale,
        "stage": user.stage,
        "traits": user.traits or {},
        "first_seen_at": user.first_seen_at,
    }


def facts_for(session: Session, user: User, now: dt.datetime, trigger: Trigger) -> conditions.Facts:
    def count(spec: staff_format.EventCount) -> int:
        query = select(Event.properties).where(
            Event.profile_id == user.id, Event.name == spec.event, Event.timestamp <= now
        )
        if spec.within is not None:
            query = query.where(Event.timestamp > now - spec.within)
        if spec.where is None:
            return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
        return sum(
            1
            for properties in session.scalars(query)
            if conditions.evaluate(spec.where, conditions.Facts(now, {}, properties or {}))
        )

    def first_time() -> bool:
        earlier = select(Event.id).where(
            Event.profile_id == user.id, Event.name == trigger.name, Event.id != trigger.event_id
        )
        return session.scalar(earlier.limit(1)) is None

    return conditions.Facts(
        now=now,
        user=user_facts(user),
        properties=trigger.properties,
        event_name=trigger.name,
        count=count,
        first_time=first_time,
    )


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


# --- Entering ------------------------------------------------------------------------------


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
        _journeys_see(session, index, user, trigger, event.timestamp, now)
        candidates += [(c, trigger) for c in index.triggered_by_event(event.name)]
    for change in changes:
        trigger = _stage_trigger(change, event.id)
        _journeys_see(session, index, user, trigger, event.timestamp, now)
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
    _journeys_see(session, index, user, trigger, now, now)
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

    def refuse(reason: str) -> None:
        record(
            session,
            user,
            now,
            "not_entered",
            f"{trigger.description}: {reason}",
            compiled=compiled,
            event_id=trigger.event_id,
        )

    facts = facts_for(session, user, now, trigger)
    reason = matching.refusal(compiled, facts)
    if reason:
        refuse(reason)
        return None
    key = ""
    if rule.key is not None:
        value = conditions.lookup(trigger.properties, rule.key)
        if value is conditions.MISSING or value is None:
            refuse(f"the event has no {rule.key!r} to key the journey on")
            return None
        key = str(value)
    reason = _entry_refusal(session, rule, user, key, now)
    if reason:
        refuse(reason)
        return None
    holdout = _bucket(user.user_id, rule.id, "holdout") * 100 < rule.holdout
    at_limit = budget is not None and budget.remaining <= 0
    if not holdout and at_limit and compiled.sends_at_once():
        refuse(
            f"max_sends_per_event ({index.policy.max_sends_per_event}) already reached "
            "by rules of higher priority"
        )
        return None
    _save_version(session, compiled, now)
    # Inserted on its own for its id: the batch's pending users and events are written
    # together later, not flushed here one event at a time.
    with session.no_autoflush:
        journey = session.scalars(
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
    if holdout:
        journey.ended_at, journey.end_reason = now, "holdout"
        record(
            session,
            user,
            now,
            "holdout",
            f"{trigger.description}: kept out for measurement ({rule.holdout:g}% holdout)",
            compiled=compiled,
            journey=journey,
            event_id=trigger.event_id,
        )
        return journey
    variant = f", variant {journey.variant}" if journey.variant else ""
    record(
        session,
        user,
        now,
        "entered",
        f"{trigger.description}{variant}",
        compiled=compiled,
        journey=journey,
        event_id=trigger.event_id,
    )
    advance(session, index, compiled, journey, user, now)
    # The budget counts rules that did send: one whose every channel was refused (no
    # address, a cap) leaves the send to the next rule.
    queued = journey.id in session.info.get(QUEUED_BY, ())
    if budget is not None and compiled.sends_at_once() and queued:
        budget.remaining -= 1
    return journey


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


# Rule versions known to be stored, by database: each is written once, not at every entry.
_stored_versions: weakref.WeakKeyDictionary[Engine, set[tuple[str, str]]] = (
    weakref.WeakKeyDictionary()
)
VERSIONS_SAVED = "lifeline.rule-versions-saved"  # in this transaction, known once it commits


@event.listens_for(Session, "after_rollback")
def _versions_not_stored(session: Session) -> None:
    session.info.pop(VERSIONS_SAVED, None)


@event.listens_for(Session, "after_commit")
def _versions_stored(session: Session) -> None:
    saved = session.info.pop(VERSIONS_SAVED, None)
    if saved:
        engine = session.get_bind()
        if isinstance(engine, Engine):
            _stored_versions.setdefault(engine, set()).update(saved)


def _save_version(session: Session, compiled: CompiledRule, now: dt.datetime) -> None:
    engine = session.get_bind()
    key = (compiled.id, compiled.version)
    if isinstance(engine, Engine) and key in _stored_versions.get(engine, ()):
        return
    session.info.setdefault(VERSIONS_SAVED, set()).add(key)
    statement = insert_ignoring_conflicts(
        RuleVersion.__table__, session.get_bind().dialect.name, ["rule_id", "version"]
    )
    session.execute(
        statement,
        [
            {
                "rule_id": compiled.id,
                "version": compiled.version,
                "definition": compiled.rule.model_dump(
                    mode="json", by_alias=True, exclude_unset=True
                ),
                "first_loaded_at": now,
            }
        ],
    )


_versions: dict[tuple[str, str], CompiledRule] = {}


def rule_for(session: Session, index: RuleIndex, journey: Journey) -> CompiledRule | None:
    """The rule version a journey entered with; None when its rule left the rule set."""
    current = index.rules.get(journey.rule_id)
    if current is None:
        return None
    if current.version == journey.rule_version:
        return current
    key = (journey.rule_id, journey.rule_version)
    if key not in _versions:
        definition = session.scalar(
            select(RuleVersion.definition).where(
                RuleVersion.rule_id == journey.rule_id, RuleVersion.version == journey.rule_version
            )
        )
        if definition is None:
            return None
        _versions[key] = compile_rule(
            staff_format.Rule.model_validate(definition), journey.rule_version
        )
    return _versions[key]


# --- Running journeys ----------------------------------------------------------------------


def _end(session: Session, user: User, journey: Journey, now: dt.datetime, reason: str) -> None:
    journey.ended_at, journey.end_reason = now, reason
    journey.wake_at = journey.waiting_for = None
    record(session, user, now, "ended", reason, journey=journey)


def advance(
    session: Session,
    index: RuleIndex,
    compiled: CompiledRule,
    journey: Journey,
    user: User,
    now: dt.datetime,
) -> None:
    """Run the journey's steps from where it stands until it waits or ends."""
    # Conditions of `if` steps see the journey's trigger: first_time asks about its event name.
    name = compiled.rule.trigger.event or compiled.rule.trigger.kind
    trigger = Trigger(name, journey.trigger_properties or {}, journey.trigger_event_id)
    while journey.ended_at is None:
        step = compiled.program[journey.pc]
        if isinstance(step, program.Send):
            _send(session, index, compiled, journey, user, step.spec, now)
            journey.pc += 1
        elif isinstance(step, program.Wait):
            journey.wake_at = _wake_time(step.spec, user, index, now)
            return
        elif isinstance(step, program.WaitFor):
            journey.waiting_for = step.spec.event
            journey.wake_at = now + step.spec.timeout
            return
        elif isinstance(step, program.If):
            passed = conditions.evaluate(step.condition, facts_for(session, user, now, trigger))
            journey.pc = journey.pc + 1 if passed else step.otherwise
        elif isinstance(step, program.Jump):
            journey.pc = step.target
        elif isinstance(step, program.Exit):
            _end(session, user, journey, now, f"exit: {step.reason}")
        else:
            _end(session, user, journey, now, "completed")


def wake(
    session: Session, index: RuleIndex, journey: Journey, user: User, now: dt.datetime
) -> None:
    """A journey's wait is over (a delay ran out, or a wait_for timed out)."""
    if user.erased_at is not None:  # the person asked to be forgotten while it waited
        _end(session, user, journey, now, "the user was erased")
        return
    compiled = rule_for(session, index, journey)
    if compiled is None:
        _end(session, user, journey, now, "rule removed from the rule set")
        return
    step = compiled.program[journey.pc]
    journey.wake_at = None
    if isinstance(step, program.WaitFor):
        journey.waiting_for = None
        journey.pc = step.on_timeout
        record(
            session,
            user,
            now,
            "timed_out",
            f"{step.spec.event!r} did not come within {format_duration(step.spec.timeout)}",
            journey=journey,
        )
    else:
        journey.pc += 1
    advance(session, index, compiled, journey, user, now)


def _journeys_see(
    session: Session,
    index: RuleIndex,
    user: User,
    trigger: Trigger,
    at: dt.datetime,
    now: dt.datetime,
) -> None:
    """Goals, exits and waits of the user's journeys that this event (a tracked event, or
    Lifeline's own lifecycle.stage_changed) answers; `at` is when it happened."""
    # Journeys are flushed when they are created; their later in-memory changes (pc, end)
    # are what the loop below reads. So no flush of the whole session is needed first,
    # which would write the batch's users and events one event at a time.
    with session.no_autoflush:
        journeys = session.scalars(
            select(Journey)
            .where(
                Journey.profile_id == user.id,
                or_(
                    Journey.ended_at.is_(None),
                    (Journey.converted_at.is_(None)) & (Journey.goal_deadline >= at),
                ),
            )
            .order_by(Journey.id)
        ).all()
    properties = trigger.properties
    for journey in journeys:
        compiled = rule_for(session, index, journey)
        if compiled is None:
            if journey.ended_at is None:
                _end(session, user, journey, now, "rule removed from the rule set")
            continue
        rule = compiled.rule
        facts = conditions.Facts(now, user_facts(user), properties, trigger.name)
        goal = rule.goal
        if (
            goal is not None
            and journey.converted_at is None
            and trigger.name == goal.event
            and journey.goal_deadline is not None
            and at <= journey.goal_deadline
            and (goal.where is None or conditions.evaluate(goal.where, facts))
        ):
            journey.converted_at = at
            record(
                session,
                user,
                now,
                "converted",
                f"goal {goal.event!r} reached",
                journey=journey,
                event_id=trigger.event_id,
            )
            if journey.ended_at is None:
                _end(session, user, journey, now, "goal reached")
            continue
        if journey.ended_at is not None:
            continue
        if trigger.name in rule.exit_on:
            _end(session, user, journey, now, f"exit_on {trigger.name!r}")
            continue
        step = compiled.program[journey.pc]
        if (
            isinstance(step, program.WaitFor)
            and journey.waiting_for == trigger.name
            and _wait_matches(step.spec, journey, facts)
        ):
            journey.waiting_for = journey.wake_at = None
            journey.pc += 1
            record(
                session,
                user,
                now,
                "event_came",
                f"{trigger.name!r} came",
                journey=journey,
                event_id=trigger.event_id,
            )
            advance(session, index, compiled, journey, user, now)


def _wait_matches(
    spec: staff_format.WaitForSpec, journey: Journey, facts: conditions.Facts
) -> bool:
    if spec.match is not None:
        expected = conditions.lookup(journey.trigger_properties or {}, spec.match)
        if (
            expected is conditions.MISSING
            or conditions.lookup(facts.properties, spec.match) != expected
        ):
            return False
    return spec.where is None or conditions.evaluate(spec.where, facts)


# --- Time ----------------------------------------------------------------------------------


def user_zone(user: User, index: RuleIndex) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(user.timezone or index.policy.default_timezone)


def _at_local_time(local_now: dt.datetime, hhmm: str, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The next moment at or after local_now whose local time is hhmm, in UTC."""
    hour, minute = (int(x) for x in hhmm.split(":"))
    candidate = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local_now:
        candidate = (candidate + dt.timedelta(days=1)).replace(hour=hour, minute=minute)
    # Round-trip through the zone so a DST gap lands on a real instant.
    return candidate.replace(tzinfo=zone).astimezone(dt.UTC)


def _wake_time(
    spec: staff_format.WaitSpec, user: User, index: RuleIndex, now: dt.datetime
) -> dt.datetime:
    if spec.for_ is not None:
        return now + spec.for_
    assert spec.until is not None
    zone = user_zone(user, index)
    return _at_local_time(now.astimezone(zone).replace(tzinfo=None), spec.until, zone)


def quiet_until(channel: str, user: User, index: RuleIndex, now: dt.datetime) -> dt.datetime | None:
    """When quiet hours end for this user and channel, if they are in them now."""
    quiet = index.policy.quiet_hours
    if quiet is None or channel not in quiet.channels:
        return None
    zone = user_zone(user, index)
    local = now.astimezone(zone).replace(tzinfo=None)
    hhmm = f"{local:%H:%M}"
    inside = (
        (quiet.start <= hhmm < quiet.end)
        if quiet.start < quiet.end
        else (hhmm >= quiet.start or hhmm < quiet.end)
    )
    return _at_local_time(local, quiet.end, zone) if inside else None


# --- Sending -------------------------------------------------------------------------------


def _address(
    session: Session, channel: str, user: User, spec: staff_format.SendSpec, journey: Journey
) -> tuple[str | None, str]:
    """(explicit address or None for the user's own, reason when there is none)."""
    if spec.to is not None:
        value = conditions.lookup(
            journey.trigger_properties or {}, spec.to.removeprefix("properties.")
        )
        if isinstance(value, str) and value:
            return value, ""
        return None, f"the event has no {spec.to}"
    if channel == "email":
        return None, "" if user.email else "no email address"
    if channel == "sms":
        if user.phone:
            return None, ""
        return None, "phone number invalid" if user.phone_invalid else "no phone number"
    has_device = session.scalar(
        select(Device.id).where(Device.profile_id == user.id, Device.disabled_at.is_(None)).limit(1)
    )
    return None, "" if has_device else "no push device"


def _cap_refusal(
    session: Session, index: RuleIndex, user: User, channel: str, now: dt.datetime
) -> str | None:
    for cap in index.policy.caps:
        if cap.channel not in (None, channel):
            continue
        query = select(func.count()).where(
            Message.profile_id == user.id,
            Message.to_address.is_(None),
            Message.send_at > now - cap.per,
        )
        if cap.channel is not None:
            query = query.where(Message.channel == channel)
        sent = int(session.scalar(query) or 0)
        if sent >= cap.max:
            scope = f"{cap.channel} messages" if cap.channel else "messages on any channel"
            return f"frequency cap: at most {cap.max} {scope} per {format_duration(cap.per)}"
    return None


def _send(
    session: Session,
    index: RuleIndex,
    compiled: CompiledRule,
    journey: Journey,
    user: User,
    spec: staff_format.SendSpec,
    now: dt.datetime,
) -> None:
    rule = compiled.rule
    template = (
        spec.template if isinstance(spec.template, str) else spec.template[journey.variant or ""]
    )
    refusals: list[str] = []
    for channel in [spec.channel, *spec.fallback]:
        to_address, missing = _address(session, channel, user, spec, journey)
        if missing:
            refusals.append(f"{channel}: {missing}")
            continue
        if not rule.transactional and to_address is None:
            capped = _cap_refusal(session, index, user, channel, now)
            if capped:
                refusals.append(f"{channel}: {capped}")
                continue
        send_at = now
        deferred = None if rule.transactional else quiet_until(channel, user, index, now)
        if deferred is not None:
            send_at = deferred
        dedupe_key = f"{rule.id}:{compiled.version}:{journey.pc}:{journey.id}"
        statement = insert_ignoring_conflicts(
            Message.__table__, session.get_bind().dialect.name, ["dedupe_key"]
        )
        with session.no_autoflush:  # it depends on nothing pending; see try_enter
            inserted = session.execute(
                statement.returning(Message.id),
                [
                    {
                        "dedupe_key": dedupe_key,
                        "profile_id": user.id,
                        "journey_id": journey.id,
                        "rule_id": rule.id,
                        "rule_version": compiled.version,
                        "step": journey.pc,
                        "variant": journey.variant,
                        "channel": channel,
                        "template": template,
                        "to_address": to_address,
                        "transactional": rule.transactional,
                        "variables": journey.trigger_properties,
                        "status": "queued",
                        "status_reason": None,
                        "send_at": send_at,
                        "created_at": now,
                        "enqueued_at": now if deferred is None else None,
                    }
                ],
            ).scalar()
        message_id = (
            inserted
            if inserted is not None
            else session.scalars(select(Message.id).where(Message.dedupe_key == dedupe_key)).one()
        )
        session.info.setdefault(QUEUED_BY, set()).add(journey.id)
        if inserted is not None:  # its status history starts here, not at the first claim
            insert_at_commit(
                session,
                MessageStatusChange.__table__,
                {"message_id": inserted, "status": "queued", "detail": None, "at": now},
            )
        if deferred is None:
            enqueue_id_after_commit(session, SEND_MESSAGE, message_id)
        detail = f"{channel} {template!r}"
        if refusals:
            detail += " (fallback: " + "; ".join(refusals) + ")"
        if deferred is not None:
            record(
                session,
                user,
                now,
                "deferred",
                f"{detail}: quiet hours, sends at {deferred:%Y-%m-%d %H:%M} UTC",
                journey=journey,
                message_id=message_id,
            )
        else:
            record(session, user, now, "queued", detail, journey=journey, message_id=message_id)
        return
    record(
        session,
        user,
        now,
        "skipped",
        f"{spec.channel} {template!r}: " + "; ".join(refusals),
        journey=journey,
    )
