"""Turning a queued message into a provider call, exactly once, and recording what happened.

A send is three steps, each short: `claim` (one transaction: re-check everything, render,
mark the message `sending`), the provider call (no transaction open), and `record_result`
(one transaction). A message is claimed before its provider is called, so a second delivery
of the same job finds it no longer queued and does nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig
from inscriptis.model.tag import CustomHtmlTagHandlerMapping
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.delivery import consent, tracking
from service.delivery.links import LinkClaims, preferences_url, sign, unsubscribe_url
from service.delivery.providers import Outgoing, ProviderError, Sent
from service.engine import policy, program
from service.engine.facts import user_facts
from service.engine.index import RuleIndex
from service.engine.templates import RenderError, render
from service.engine.versions import rule_for
from service.kit.db import enqueue_id_after_commit, insert_at_commit
from service.kit.durations import format_duration
from service.kit.jobs import SEND_MESSAGE
from service.models import (
    Device,
    ErasedAddress,
    Journey,
    Message,
    MessageStatus,
    MessageStatusChange,
    User,
)


def set_status(
    session: Session,
    message: Message,
    status: MessageStatus,
    now: dt.datetime,
    detail: str | None = None,
) -> None:
    message.status, message.status_at = status, now
    if detail is not None:
        message.status_reason = detail
    insert_at_commit(
        session,
        MessageStatusChange.__table__,
        {"message_id": message.id, "status": status, "detail": detail, "at": now},
    )


def enqueue_send(session: Session, message: Message, now: dt.datetime) -> None:
    message.enqueued_at = now
    enqueue_id_after_commit(session, SEND_MESSAGE, message.id)


@dataclass(frozen=True)
class Links:
    public_url: str
    key: bytes


@dataclass(frozen=True)
class Claimed:
    outgoing: Outgoing
    attempt: int


GSM_7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_7_EXTENDED = frozenset("^{}\\[~]|€")  # each takes two septets


def sms_segments(body: str) -> int:
    """How many SMS segments the body takes: GSM-7 160/153 septets, else UCS-2 70/67."""
    if all(c in GSM_7 or c in GSM_7_EXTENDED for c in body):
        length = sum(2 if c in GSM_7_EXTENDED else 1 for c in body)
        single, multi = 160, 153
    else:
        length = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if length <= single else math.ceil(length / multi)


def _link_start(state: Any, attrs: dict[str, str]) -> None:
    state.link_target = attrs.get("href", "")


def _link_end(state: Any) -> None:
    if state.link_target:
        state.tags[-1].write(f" ({state.link_target})")


# Browser-like layout (the "strict" profile: no indenting of <div>s), and each link's target
# after its text, "text (url)", as plain-text emails write them.
_TEXT_CONFIG = ParserConfig(
    css=CSS_PROFILES["strict"],
    custom_html_tag_handler_mapping=CustomHtmlTagHandlerMapping(
        start_tag_mapping={"a": _link_start}, end_tag_mapping={"a": _link_end}
    ),
)


def text_from_html(markup: str) -> str:
    """A plain-text part for an email that has only HTML."""
    text: str = get_text(markup, _TEXT_CONFIG)
    return text.strip()


Destination = tuple[str | None, str | None]  # the address, and for push the device's platform


def _destination(session: Session, message: Message, user: User | None) -> Destination:
    if message.channel == "push":
        device = select(Device.token, Device.platform).order_by(Device.id.desc()).limit(1)
        if message.to_address:  # a token from the event: its platform, if registered
            found = session.execute(device.where(Device.token == message.to_address)).first()
            return message.to_address, found.platform if found else None
        if user is None:
            return None, None
        found = session.execute(
            device.where(Device.profile_id == user.id, Device.disabled_at.is_(None))
        ).first()
        return (found.token, found.platform) if found else (None, None)
    if message.to_address:
        return message.to_address, None
    if user is None:
        return None, None
    return (user.email if message.channel == "email" else user.phone), None


def _digest(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


@dataclass(frozen=True)
class Checks:
    """What the checks of a batch of claims look up, read once for the batch."""

    destinations: dict[int, Destination]  # by message id: where it would go
    consents: consent.Snapshot
    erased: set[str]  # digests of the batch's addresses that belong to erased people
    caps: policy.CapCounts  # of the users whose messages the caps apply to

    @classmethod
    def load(
        cls, session: Session, index: RuleIndex, messages: Sequence[Message], now: dt.datetime
    ) -> Checks:
        destinations = {
            m.id: _destination(
                session, m, session.get(User, m.profile_id) if m.profile_id else None
            )
            for m in messages
        }
        addresses = {message_id: address for message_id, (address, _) in destinations.items()}
        by_channel = [(m.channel, a) for m in messages if (a := addresses[m.id])]
        profiles = [m.profile_id for m in messages if m.profile_id]
        digests = {_digest(address) for _, address in by_channel}
        erased = select(ErasedAddress.address_hash).where(ErasedAddress.address_hash.in_(digests))
        capped = {
            m.profile_id
            for m in messages
            if m.profile_id and policy.caps_apply(m.transactional, m.to_address)
        }
        return cls(
            destinations,
            consent.Snapshot.load(session, profiles, by_channel),
            set(session.scalars(erased)) if digests else set(),
            policy.CapCounts.load(session, index.policy, capped, now, planning=False),
        )


def _skip_reason(session: Session, message: Message, user: User | None) -> str | None:
    """Why the message must not go out at all now, checked again right before sending."""
    if user is not None and user.erased_at is not None:
        return "the user was erased"
    journey = session.get(Journey, message.journey_id) if message.journey_id else None
    if (
        journey is not None
        and journey.ended_at is not None
        and journey.ended_at > message.created_at
        and journey.end_reason != "completed"
    ):
        return f"the journey ended before sending: {journey.end_reason}"
    if journey is not None and journey.converted_at is not None:
        # A journey that ran to its end stays "completed" when its goal comes later; the
        # message it left waiting (deferred by quiet hours, a retry) is no longer wanted.
        return "the journey ended before sending: goal reached"
    return None


def _channel_refusal(
    index: RuleIndex, message: Message, user: User | None, checks: Checks
) -> str | None:
    """Why the message cannot go out on its channel now; the rule's next channel may."""
    address, _ = checks.destinations[message.id]
    if not address:
        return {
            "email": "no email address",
            "sms": "no phone number",
            "push": "no push device",
        }.get(message.channel, "no address")
    if _digest(address) in checks.erased:
        return "the address belongs to an erased person"
    if user is not None and not message.transactional and not message.to_address:
        topic = _topic(index, message)
        if reason := checks.consents.may_send(user.id, message.channel, topic):
            return reason
    if reason := checks.consents.suppressed(message.channel, address, message.transactional):
        return reason
    if user is None or not policy.caps_apply(message.transactional, message.to_address):
        return None
    cap = checks.caps.reached(user.id, message.channel)
    if cap is None:
        return None
    scope = f"{cap.channel} messages" if cap.channel else "messages"
    return f"frequency cap: {cap.max} {scope} per {format_duration(cap.per)} sent"


def _fall_back(
    session: Session, index: RuleIndex, message: Message, reason: str, now: dt.datetime
) -> Message | None:
    """The message for the next channel of the rule's `fallback` list, queued now; None when
    the step has no channel after this one. Sends to an address from the event (`to:`) have
    no other channel."""
    journey = session.get(Journey, message.journey_id) if message.journey_id else None
    compiled = rule_for(session, index, journey) if journey else None
    if compiled is None or message.step is None or message.to_address:
        return None
    step = compiled.program[message.step] if message.step < len(compiled.program) else None
    if not isinstance(step, program.Send):
        return None
    channels = [step.spec.channel, *step.spec.fallback]
    later = channels[channels.index(message.channel) + 1 :] if message.channel in channels else []
    if not later:
        return None
    instead = Message(
        dedupe_key=f"{message.dedupe_key}>{later[0]}",
        profile_id=message.profile_id,
        journey_id=message.journey_id,
        rule_id=message.rule_id,
        rule_version=message.rule_version,
        step=message.step,
        variant=message.variant,
        channel=later[0],
        template=message.template,
        transactional=message.transactional,
        variables=message.variables,
        status=MessageStatus.QUEUED,
        status_at=now,
        send_at=now,
        created_at=now,
    )
    session.add(instead)
    session.flush()
    detail = f"fallback from {message.channel} (message {message.id}): {reason}"
    set_status(session, instead, MessageStatus.QUEUED, now, detail)
    enqueue_send(session, instead, now)
    return instead


def claim(
    session: Session, index: RuleIndex, links: Links, message_id: int, now: dt.datetime
) -> Claimed | None:
    """Check, render and claim a due message; None when there is nothing to send (already
    claimed or sent, not due yet, skipped or failed here with its reason)."""
    claimed = claim_many(session, index, links, [message_id], now)
    return claimed[0] if claimed else None


def claim_many(
    session: Session, index: RuleIndex, links: Links, message_ids: Sequence[int], now: dt.datetime
) -> list[Claimed]:
    """`claim` for several messages in one transaction: the messages are locked, and their
    users and journeys loaded, by one query each. Messages another worker holds are left to
    it."""
    messages = session.scalars(
        select(Message)
        .where(Message.id.in_(message_ids))
        .order_by(Message.id)
        .with_for_update(skip_locked=True)
    ).all()
    due = [m for m in messages if m.status == MessageStatus.QUEUED and m.send_at <= now]
    # Into the session's identity map, where the checks' session.get() finds them (held
    # here: the map keeps only weak references).
    loaded: list[object] = []
    if profile_ids := {m.profile_id for m in due if m.profile_id}:
        loaded += session.scalars(select(User).where(User.id.in_(profile_ids))).all()
    if journey_ids := {m.journey_id for m in due if m.journey_id}:
        loaded += session.scalars(select(Journey).where(Journey.id.in_(journey_ids))).all()
    # The status changes are written together at the end, not before each check's query.
    with session.no_autoflush:
        checks = Checks.load(session, index, due, now)
        return [claimed for m in due if (claimed := _claim(session, index, links, m, checks, now))]


def _claim(
    session: Session,
    index: RuleIndex,
    links: Links,
    message: Message,
    checks: Checks,
    now: dt.datetime,
) -> Claimed | None:
    user = session.get(User, message.profile_id) if message.profile_id else None
    if not _still_goes(session, index, message, user, checks, now):
        return None
    address, platform = checks.destinations[message.id]
    assert address is not None
    template = index.templates.get(message.template)
    if template is None:
        set_status(
            session,
            message,
            MessageStatus.FAILED,
            now,
            f"no template {message.template!r} in the live rule set",
        )
        return None
    token = _link_token(index, links, message)
    context = _render_context(links, message, user, token)
    try:
        content = render(template, message.channel, user.locale if user else None, context)
    except RenderError as exc:
        set_status(
            session, message, MessageStatus.FAILED, now, f"template {message.template!r}: {exc}"
        )
        return None
    headers: dict[str, str] = {}
    if message.channel == "email":
        headers = _finish_email(session, index, links, message, content, token)
    _mark_sending(session, message, content, checks, now)
    outgoing = Outgoing(
        message.id,
        message.channel,
        address,
        content,
        headers,
        idempotency_key=f"lifeline-message-{message.id}",
        platform=platform,
    )
    return Claimed(outgoing, message.attempts)


def _still_goes(
    session: Session,
    index: RuleIndex,
    message: Message,
    user: User | None,
    checks: Checks,
    now: dt.datetime,
) -> bool:
    """Whether the message may go out now. When not, it is skipped (falling back to the step's
    next channel, if it has one) or, in quiet hours, moved to their end."""
    reason = _skip_reason(session, message, user)
    if reason:
        set_status(session, message, MessageStatus.SKIPPED, now, reason)
        return False
    if reason := _channel_refusal(index, message, user, checks):
        if (instead := _fall_back(session, index, message, reason, now)) is not None:
            reason += f"; falling back to {instead.channel} (message {instead.id})"
        set_status(session, message, MessageStatus.SKIPPED, now, reason)
        return False
    if user is not None and policy.quiet_hours_apply(message.transactional):
        later = policy.quiet_until(index.policy, message.channel, user.timezone, now)
        if later is not None:  # the user's timezone may have changed since it was planned
            message.send_at = later
            message.status_reason = f"quiet hours: sends at {later:%Y-%m-%d %H:%M} UTC"
            return False
    return True


def _link_token(index: RuleIndex, links: Links, message: Message) -> str:
    """The signed token of the message's unsubscribe and preferences links ('' without a user)."""
    if not message.profile_id:
        return ""
    topic = _topic(index, message)
    return sign(links.key, LinkClaims(message.profile_id, message.channel, topic, message.id))


def _render_context(
    links: Links, message: Message, user: User | None, token: str
) -> dict[str, object]:
    """What the template sees (templates.VARIABLES)."""
    return {
        "user": user_facts(user) if user else {"traits": {}},
        "event": {"name": None, "properties": message.variables or {}},
        "links": {
            "unsubscribe": unsubscribe_url(links.public_url, token),
            "preferences": preferences_url(links.public_url, token),
        },
        "message": {"id": message.id},
    }


def _finish_email(
    session: Session,
    index: RuleIndex,
    links: Links,
    message: Message,
    content: dict[str, str],
    token: str,
) -> dict[str, str]:
    """A plain-text part where the template has none, open and click tracking, and the
    one-click unsubscribe headers (not on transactional mail); returns the headers."""
    content.setdefault("text", text_from_html(content.get("html", "")))
    tracking.track_email(session, index, message, content, links.public_url, links.key)
    if message.transactional or not token:
        return {}
    unsubscribe = unsubscribe_url(links.public_url, token)
    return {
        "List-Unsubscribe": f"<{unsubscribe}>, <mailto:unsubscribe@{_host(links)}?subject={token}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def _mark_sending(
    session: Session, message: Message, content: dict[str, str], checks: Checks, now: dt.datetime
) -> None:
    """Claimed: from here a second delivery of the job finds the message taken."""
    message.attempts += 1
    message.claimed_at = now
    detail = None
    if message.channel == "sms":
        detail = f"{sms_segments(content.get('body', ''))} SMS segment(s)"
    set_status(session, message, MessageStatus.SENDING, now, detail)
    if message.profile_id and message.to_address is None:  # it counts against the caps now
        checks.caps.went_out(message.profile_id, message.channel)


def _host(links: Links) -> str:
    return re.sub(r"^https?://", "", links.public_url).split("/")[0].split(":")[0]


def _topic(index: RuleIndex, message: Message) -> str:
    compiled = index.rules.get(message.rule_id or "")
    return compiled.rule.category if compiled else "general"


def release(
    session: Session, message_id: int, send_at: dt.datetime, now: dt.datetime, reason: str
) -> None:
    """Put a claimed message back to `queued` before its provider was called (no slot under a
    rate limit): the claim's attempt is given back, and the scheduler hands the message to the
    broker again at `send_at`."""
    message = session.scalar(select(Message).where(Message.id == message_id).with_for_update())
    if message is None or message.status != MessageStatus.SENDING:
        return
    message.attempts -= 1
    message.send_at, message.enqueued_at = send_at, None
    set_status(session, message, MessageStatus.QUEUED, now, reason)


def backoff(attempt: int, retry_after: float | None, base: float = 30) -> dt.timedelta:
    """Exponential back-off (by default 30 s, 1 min, 2 min, ...), or the provider's
    Retry-After."""
    seconds = retry_after if retry_after is not None else min(base * 2 ** (attempt - 1), 3600)
    return dt.timedelta(seconds=seconds)


def record_result(
    session: Session,
    message_id: int,
    result: Sent | ProviderError,
    provider: str,
    now: dt.datetime,
    max_attempts: int,
    retry_base_seconds: float = 30,
    address: str | None = None,
) -> None:
    """Record a provider's answer. `address` is where the message went (for push, the device
    token): an `address_gone` error disables the device, suppresses the address or records the
    opt-out."""
    outcome = Outcome(message_id, result, provider, address)
    record_results(session, [outcome], now, max_attempts, retry_base_seconds)


@dataclass(frozen=True)
class Outcome:
    """What a provider said about one message."""

    message_id: int
    result: Sent | ProviderError
    provider: str
    address: str | None = None


def record_results(
    session: Session,
    outcomes: Sequence[Outcome],
    now: dt.datetime,
    max_attempts: int,
    retry_base_seconds: float = 30,
) -> None:
    """`record_result` for several messages, locked by one query."""
    by_id = {outcome.message_id: outcome for outcome in outcomes}
    messages = session.scalars(
        select(Message).where(Message.id.in_(by_id)).order_by(Message.id).with_for_update()
    ).all()
    for message in messages:
        if message.status == MessageStatus.SENDING:
            outcome = by_id[message.id]
            _record(session, message, outcome, now, max_attempts, retry_base_seconds)


def _record(
    session: Session,
    message: Message,
    outcome: Outcome,
    now: dt.datetime,
    max_attempts: int,
    retry_base_seconds: float,
) -> None:
    result, provider, address = outcome.result, outcome.provider, outcome.address
    message.provider = provider
    if isinstance(result, Sent):
        message.provider_message_id = result.provider_message_id
        set_status(session, message, MessageStatus.SENT, now, f"accepted by {provider}")
        return
    if result.kind == "retryable" and message.attempts < max_attempts:
        wait = backoff(message.attempts, result.retry_after, retry_base_seconds)
        message.send_at = now + wait
        message.enqueued_at = None  # the scheduler hands it to the broker when it is due
        set_status(
            session,
            message,
            MessageStatus.QUEUED,
            now,
            f"{provider}: {result.reason}; attempt {message.attempts} of {max_attempts}, "
            f"next in {format_duration(wait)}",
        )
        return
    kind = "gave up after retries" if result.kind == "retryable" else result.kind
    detail = f"{provider} ({kind}): {result.reason}"
    if result.kind == "address_gone" and address:
        user = session.get(User, message.profile_id) if message.profile_id else None
        detail += "; " + consent.address_gone(session, message.channel, address, user, now)
    set_status(session, message, MessageStatus.FAILED, now, detail)
