"""Planning a send step's message: the first of its channels that has an address and is within
the contact policy becomes a queued message (deferred past quiet hours), or the step is skipped
with every channel's reason."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.engine import conditions, policy, staff_format
from service.engine.decisions import record
from service.engine.index import CompiledRule, RuleIndex
from service.kit.db import enqueue_id_after_commit, insert_at_commit, insert_ignoring_conflicts
from service.kit.durations import format_duration
from service.kit.jobs import SEND_MESSAGE
from service.models import Device, Journey, Message, MessageStatus, MessageStatusChange, User

QUEUED_BY = "lifeline.journeys-that-queued"  # in this transaction


def queued_in_transaction(session: Session, journey_id: int) -> bool:
    """Whether the journey queued a message in this transaction."""
    return journey_id in session.info.get(QUEUED_BY, ())


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


def plan_message(
    session: Session,
    index: RuleIndex,
    compiled: CompiledRule,
    journey: Journey,
    user: User,
    spec: staff_format.SendSpec,
    now: dt.datetime,
) -> None:
    """The step's message on the first of its channels that has an address and is within the
    caps, queued now or deferred past quiet hours; else the step is skipped with each
    channel's reason."""
    rule = compiled.rule
    template = (
        spec.template if isinstance(spec.template, str) else spec.template[journey.variant or ""]
    )
    refusals: list[str] = []
    caps: policy.CapCounts | None = None  # read when the first channel needs them
    for channel in [spec.channel, *spec.fallback]:
        to_address, missing = _address(session, channel, user, spec, journey)
        if missing:
            refusals.append(f"{channel}: {missing}")
            continue
        if policy.caps_apply(rule.transactional, to_address):
            if caps is None:
                caps = policy.CapCounts.load(session, index.policy, [user.id], now, planning=True)
            if (cap := caps.reached(user.id, channel)) is not None:
                refusals.append(f"{channel}: {_cap_reason(cap)}")
                continue
        deferred = None
        if policy.quiet_hours_apply(rule.transactional):
            deferred = policy.quiet_until(index.policy, channel, user.timezone, now)
        choice = _Choice(channel, template, to_address, deferred)
        message_id = _queue(session, compiled, journey, user, choice, now)
        _record_queued(session, user, journey, choice, message_id, refusals, now)
        return
    record(
        session,
        user,
        now,
        "skipped",
        f"{spec.channel} {template!r}: " + "; ".join(refusals),
        journey=journey,
    )


def _cap_reason(cap: policy.Cap) -> str:
    scope = f"{cap.channel} messages" if cap.channel else "messages on any channel"
    return f"frequency cap: at most {cap.max} {scope} per {format_duration(cap.per)}"


@dataclass(frozen=True)
class _Choice:
    """Where and how the step's message goes."""

    channel: str
    template: str
    to_address: str | None  # None: the user's own
    deferred: dt.datetime | None  # past quiet hours: when it goes instead of now


def _queue(
    session: Session,
    compiled: CompiledRule,
    journey: Journey,
    user: User,
    choice: _Choice,
    now: dt.datetime,
) -> int:
    """The message, inserted once (the step run again finds the one it made) and handed to
    a worker after the commit unless deferred; its id."""
    rule = compiled.rule
    dedupe_key = f"{rule.id}:{compiled.version}:{journey.pc}:{journey.id}"
    statement = insert_ignoring_conflicts(
        Message.__table__, session.get_bind().dialect.name, ["dedupe_key"]
    )
    row = {
        "dedupe_key": dedupe_key,
        "profile_id": user.id,
        "journey_id": journey.id,
        "rule_id": rule.id,
        "rule_version": compiled.version,
        "step": journey.pc,
        "variant": journey.variant,
        "channel": choice.channel,
        "template": choice.template,
        "to_address": choice.to_address,
        "transactional": rule.transactional,
        "variables": journey.trigger_properties,
        "status": MessageStatus.QUEUED,
        "status_reason": None,
        "send_at": choice.deferred or now,
        "created_at": now,
        "enqueued_at": now if choice.deferred is None else None,
    }
    with session.no_autoflush:  # it depends on nothing pending; see entry.try_enter
        inserted = session.execute(statement.returning(Message.id), [row]).scalar()
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
            {"message_id": inserted, "status": MessageStatus.QUEUED, "detail": None, "at": now},
        )
    if choice.deferred is None:
        enqueue_id_after_commit(session, SEND_MESSAGE, message_id)
    return message_id


def _record_queued(
    session: Session,
    user: User,
    journey: Journey,
    choice: _Choice,
    message_id: int,
    refusals: list[str],
    now: dt.datetime,
) -> None:
    detail = f"{choice.channel} {choice.template!r}"
    if refusals:
        detail += " (fallback: " + "; ".join(refusals) + ")"
    if choice.deferred is not None:
        detail += f": quiet hours, sends at {choice.deferred:%Y-%m-%d %H:%M} UTC"
    outcome = "queued" if choice.deferred is None else "deferred"
    record(session, user, now, outcome, detail, journey=journey, message_id=message_id)
