"""Planning a send step's message: the first of its channels that has an address and is within
the contact policy becomes a queued message (deferred past quiet hours), or the step is skipped
with every channel's reason."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.engine import conditions, policy, staff_format
from service.engine.decisions import record
from service.engine.index import CompiledRule, RuleIndex
from service.kit.db import enqueue_id_after_commit, insert_at_commit, insert_ignoring_conflicts
from service.kit.durations import format_duration
from service.kit.jobs import SEND_MESSAGE
from service.models import Device, Journey, Message, MessageStatusChange, User

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


def plan_message(
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
        deferred = (
            None if rule.transactional else policy.quiet_until(index.policy, channel, user, now)
        )
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
