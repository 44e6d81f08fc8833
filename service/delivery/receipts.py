"""Applying providers' delivery reports: the message's status, the suppression list and
subscriptions, and events on the person's timeline.

The webhook endpoint (service.delivery.webhooks) calls `apply_reports` in one transaction once
the provider's signature is verified. A report is applied once: its event id goes into
`webhook_events` first, so a webhook the provider delivers again changes nothing.

A report names our message by id (providers that echo our `lifeline_message_id` metadata) or
by the provider's own message id. It may only change a message its account sent: a report
naming a message another account sent, or one never handed to a provider, counts as
unknown and changes nothing (two deployments sharing a provider account have overlapping
message ids). A report that arrives before the send's result is recorded (the message is
still `sending`) is applied, and the message takes the account as its provider.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.delivery import consent, preferences, tracking
from service.delivery.consent import ALL_TOPICS, SUPPRESSIBLE, TOPICS
from service.delivery.links import LinkClaims
from service.delivery.providers import Report
from service.delivery.service import set_status
from service.kit.db import enqueue_after_commit, insert_ignoring_conflicts
from service.kit.events import REPORT_EVENTS
from service.kit.jobs import PROCESS_EVENTS
from service.models import (
    ErasedAddress,
    Event,
    Message,
    MessageStatus,
    RuleVersion,
    Source,
    User,
    WebhookEvent,
)

log = logging.getLogger(__name__)

# The source Lifeline's own events are stored under. Its key hash is not a SHA-256 digest, so
# no write key can ever authenticate as it.
INTERNAL_SOURCE_KEY = "internal:delivery-reports"
INTERNAL_SOURCE_NAME = "Lifeline delivery reports"
MAX_EVENT_ID = 200  # webhook_events.event_id; longer ids are stored as their digest


@dataclass
class Applied:
    applied: int = 0
    duplicates: int = 0  # already applied: a provider's retry, or repeated in one request
    unknown: int = 0  # no message of this account: accepted and ignored


def apply_reports(
    session: Session, account: str, reports: Sequence[Report], now: dt.datetime
) -> Applied:
    """Apply the new ones of `reports` from provider account `account`."""
    new = _first_time(session, account, reports, now)
    result = Applied(duplicates=len(reports) - len(new))
    found = _messages(session, account, new)
    events: list[dict[str, Any]] = []
    for key, report in sorted(new.items(), key=lambda item: item[1].at):
        message = found.get(key)
        if message is None:
            result.unknown += 1
            continue
        user = session.get(User, message.profile_id) if message.profile_id else None
        if user is not None and user.erased_at is not None:
            user = None
        at = min(report.at, now)
        _apply(session, account, report, message, user, at, now)
        name = REPORT_EVENTS.get((message.channel, report.status))
        if user is not None and name is not None:
            events.append(_event_row(account, key, name, report, message, user, at, now))
        result.applied += 1
    if events:
        _record_events(session, events)
    return result


def _key(event_id: str) -> str:
    if len(event_id) <= MAX_EVENT_ID:
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()


def _first_time(
    session: Session, account: str, reports: Sequence[Report], now: dt.datetime
) -> dict[str, Report]:
    """The reports not applied before, by event key; recording them makes them applied.
    Keys are inserted in order, so two requests with the same events cannot deadlock."""
    unique: dict[str, Report] = {}
    for report in reports:
        unique.setdefault(_key(report.event_id), report)
    if not unique:
        return {}
    statement = insert_ignoring_conflicts(
        WebhookEvent.__table__, session.get_bind().dialect.name, ["account", "event_id"]
    ).returning(WebhookEvent.event_id)
    rows = [{"account": account, "event_id": key, "received_at": now} for key in sorted(unique)]
    inserted = set(session.scalars(statement, rows))
    return {key: report for key, report in unique.items() if key in inserted}


def _messages(session: Session, account: str, reports: dict[str, Report]) -> dict[str, Message]:
    """The message each report is about (by event key), locked in id order; reports about no
    message of this account are left out, and logged."""
    ids = {r.message_id for r in reports.values() if r.message_id is not None}
    provider_ids = {r.provider_message_id for r in reports.values() if r.provider_message_id}
    by_id: dict[int, Message] = {}
    by_provider_id: dict[str, Message] = {}
    if ids:
        query = select(Message).where(Message.id.in_(ids))
        by_id = {m.id: m for m in session.scalars(query.order_by(Message.id).with_for_update())}
    if provider_ids:
        query = select(Message).where(
            Message.provider == account, Message.provider_message_id.in_(provider_ids)
        )
        for m in session.scalars(query.order_by(Message.id).with_for_update()):
            by_provider_id.setdefault(m.provider_message_id or "", m)
    found: dict[str, Message] = {}
    for key, report in reports.items():
        message = by_id.get(report.message_id) if report.message_id is not None else None
        if message is not None and not _sent_by(message, account):
            log.warning(
                "delivery report from %s about message %d, which %s: ignored",
                account,
                message.id,
                f"{message.provider} sent" if message.provider else "no provider sent",
            )
            message = None
        if message is None and report.provider_message_id:
            message = by_provider_id.get(report.provider_message_id)
        if message is None:
            log.info(
                "delivery report %s from %s about an unknown message (ours %s, provider's %s)",
                report.status,
                account,
                report.message_id,
                report.provider_message_id,
            )
            continue
        if message.provider is None:
            message.provider = account
        found[key] = message
    return found


def _sent_by(message: Message, account: str) -> bool:
    if account == tracking.ACCOUNT:  # Lifeline's own tracking: of a message any provider sent
        return message.provider is not None
    if message.provider is None:
        return (
            message.status == MessageStatus.SENDING
        )  # handed over; the result is not recorded yet
    return message.provider == account


def _apply(
    session: Session,
    account: str,
    report: Report,
    message: Message,
    user: User | None,
    at: dt.datetime,
    now: dt.datetime,
) -> None:
    """The status (it only moves forward), then what the report means for consent, which
    holds even when the status did not move (a complaint about a message already clicked)."""
    reported = MessageStatus(report.status)
    if MessageStatus(message.status).can_move_to(reported):
        detail = f"{account}: {report.detail}" if report.detail else f"reported by {account}"
        set_status(session, message, reported, at, detail)
    address = report.address or message.to_address
    if address is None and user is not None:
        address = consent.profile_address(user, message.channel)
    if report.status == "bounced":
        _suppress(session, message.channel, address, "hard_bounce", now)
    elif report.status == "complained":
        _suppress(session, message.channel, address, "complaint", now)
        if user is not None and not message.to_address:
            consent.set_subscription(
                session, user, message.channel, ALL_TOPICS, False, "complaint", now
            )
    elif report.status == "unsubscribed":
        # An SMS STOP blocks the sender for that number altogether, not one topic.
        everything = message.channel == "sms"
        topic = _topic(session, message)
        claims = LinkClaims(message.profile_id or 0, message.channel, topic, message.id)
        preferences.unsubscribe(session, claims, everything, now)


def _suppress(
    session: Session, channel: str, address: str | None, reason: str, now: dt.datetime
) -> None:
    """Suppress the address, unless it cannot be (push, not an address) or belongs to an
    erased person (blocked already; storing it would undo the erasure)."""
    if address is None or channel not in SUPPRESSIBLE:
        return
    digest = hashlib.sha256(address.strip().lower().encode()).hexdigest()
    if session.get(ErasedAddress, digest) is not None:
        return
    with contextlib.suppress(consent.InvalidAddress):
        consent.suppress(session, channel, address, reason, now)


def _topic(session: Session, message: Message) -> str:
    """The message's rule's category, from the rule as it was when the message was made."""
    definition = None
    if message.rule_id and message.rule_version:
        definition = session.scalar(
            select(RuleVersion.definition).where(
                RuleVersion.rule_id == message.rule_id,
                RuleVersion.version == message.rule_version,
            )
        )
    category = (definition or {}).get("category")
    return category if category in TOPICS else ALL_TOPICS


def _event_row(
    account: str,
    key: str,
    name: str,
    report: Report,
    message: Message,
    user: User,
    at: dt.datetime,
    now: dt.datetime,
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "message_id": message.id,
        "rule_id": message.rule_id,
        "channel": message.channel,
        "provider": account,
    }
    if report.url:
        properties["url"] = report.url
    digest = hashlib.sha256(f"{account}\n{key}".encode()).hexdigest()
    return {
        "message_id": f"report-{digest[:40]}",  # the same report is the same event
        "type": "track",
        "name": name,
        "user_id": user.user_id,
        "anonymous_id": None,
        "previous_id": None,
        "group_id": None,
        "profile_id": user.id,
        "properties": properties,
        "traits": None,
        "context": None,
        "integrations": None,
        "original_timestamp": at,
        "sent_at": None,
        "timestamp": at,
        "received_at": now,
        "enqueued_at": now,
    }


def _record_events(session: Session, rows: list[dict[str, Any]]) -> None:
    """Store the events and have them processed after the commit, as ingested ones are."""
    source_id = internal_source(session, rows[0]["received_at"])
    statement = insert_ignoring_conflicts(
        Event.__table__, session.get_bind().dialect.name, ["source_id", "message_id"]
    ).returning(Event.id)
    ids = list(session.scalars(statement, [{**row, "source_id": source_id} for row in rows]))
    for start in range(0, len(ids), 100):
        enqueue_after_commit(session, PROCESS_EVENTS, ids[start : start + 100])


def internal_source(session: Session, now: dt.datetime) -> int:
    """The id of the source Lifeline's own events belong to, created on first use."""
    found = session.scalar(select(Source.id).where(Source.key_hash == INTERNAL_SOURCE_KEY))
    if found is not None:
        return found
    statement = insert_ignoring_conflicts(
        Source.__table__, session.get_bind().dialect.name, ["key_hash"]
    )
    session.execute(
        statement,
        [
            {
                "name": INTERNAL_SOURCE_NAME,
                "key_hash": INTERNAL_SOURCE_KEY,
                "key_prefix": "internal",
                "created_at": now,
            }
        ],
    )
    source_id: int = session.scalars(
        select(Source.id).where(Source.key_hash == INTERNAL_SOURCE_KEY)
    ).one()
    return source_id
