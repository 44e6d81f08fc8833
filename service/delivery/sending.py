"""Sending a group of queued messages, and the scheduler's sweep of due and stuck messages.

A send job claims its messages (service.delivery.service), routes each to its provider
within that provider's rate limit, calls the providers side by side with no transaction
open, and records every answer. The process that runs the job hands in what only it has:
its transactions, its provider adapters, its rate limiters and its pool of send threads
(`Sender`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.delivery import service as delivery
from service.delivery.accounts import configured_accounts
from service.delivery.links import secret_key
from service.delivery.providers import (
    Provider,
    ProviderConfigError,
    ProviderError,
    Sent,
    build_adapter,
)
from service.delivery.service import Claimed, Links, Outcome
from service.engine.index import RuleIndex
from service.kit.db import Transaction, utcnow
from service.kit.durations import format_duration
from service.kit.settings import Settings
from service.models import Message, MessageStatus

log = logging.getLogger(__name__)

SWEEP_BATCH = 1000


class Providers:
    """A process's provider adapters by channel, push ones by device platform: 'email',
    'sms', 'push:ios', 'push:*' (any other platform). Built from the settings on first use
    (the providers file read once), then kept."""

    def __init__(self, settings: Settings, adapters: Mapping[str, Provider] | None = None):
        self._settings = settings
        self._adapters = dict(adapters) if adapters is not None else None

    def loaded(self) -> dict[str, Provider]:
        """Every adapter; raises ProviderConfigError or LookupError for one that cannot be
        built."""
        if self._adapters is None:
            settings = self._settings
            accounts = configured_accounts(settings)
            by_key = {"email": settings.email_provider, "sms": settings.sms_provider}
            by_key |= {f"push:{p}": name for p, name in settings.push_providers.items()}
            self._adapters = {
                key: build_adapter(accounts[name], settings) for key, name in by_key.items()
            }
        return self._adapters

    def route(self, channel: str, platform: str | None) -> Provider | None:
        """The adapter for a message on `channel`, to a device on `platform` (push)."""
        adapters = self.loaded()
        if channel != "push":
            return adapters.get(channel)
        return adapters.get(f"push:{platform}") or adapters.get("push:*")

    def of_channel(self, channel: str) -> list[Provider]:
        """The adapters a message on `channel` may have gone through (push: any platform's)."""
        return [p for key, p in self.loaded().items() if key.partition(":")[0] == channel]


@dataclass(frozen=True)
class Throttled:
    """No slot for this call under its provider's rate limit: try again after `wait`."""

    wait: dt.timedelta
    reason: str


Call = tuple[Claimed, Provider]
Answer = tuple[Claimed, Provider, Sent | ProviderError]


class CallAll(Protocol):
    """Runs `call` on every item, side by side; yields the answers in order."""

    def __call__(
        self, call: Callable[[Call], Answer], calls: list[Call], /
    ) -> Iterable[Answer]: ...


@dataclass(frozen=True)
class Sender:
    """What sending needs from the process it runs in."""

    settings: Settings
    providers: Providers
    transaction: Transaction
    take_slot: Callable[[str], Throttled | None]  # counts a call; None when within the limit
    call_all: CallAll  # provider calls are mostly waiting on the network


def send_messages(sender: Sender, rules: RuleIndex | None, message_ids: list[int]) -> None:
    """Send a group of messages: one transaction claims them all, the provider calls run
    side by side, one transaction records every answer. If the group cannot be claimed or
    recorded together, each message is tried on its own, so one message that breaks
    something does not hold up the others."""
    if rules is None:
        log.error(
            "%d message(s) wait: there is no rules folder to render their templates",
            len(message_ids),
        )
        return
    links = Links(sender.settings.public_url, secret_key(sender.settings))
    # Before the claim: a provider that cannot load must leave the messages queued, not
    # claimed and stuck in `sending`. The scheduler hands them over again once it is fixed.
    try:
        sender.providers.loaded()
    except (ProviderConfigError, LookupError) as exc:
        log.error("%d message(s) wait: a provider cannot be loaded: %s", len(message_ids), exc)
        return
    try:
        with sender.transaction() as uow:
            claimed = delivery.claim_many(uow.session, rules, links, message_ids, utcnow())
    except Exception:
        if len(message_ids) == 1:
            raise
        log.warning("claiming %d messages together failed; trying each", len(message_ids))
        for message_id in message_ids:
            try:
                send_messages(sender, rules, [message_id])
            except Exception:  # it stays queued; the scheduler hands it over again
                log.exception("message %d could not be claimed", message_id)
        return
    if not claimed:
        return
    to_call, outcomes = _route(sender, claimed)
    answers = sender.call_all(_call, to_call)
    outcomes += [Outcome(c.outgoing.message_id, r, p.name, c.outgoing.to) for c, p, r in answers]
    _record(sender, outcomes)


def _route(sender: Sender, claimed: list[Claimed]) -> tuple[list[Call], list[Outcome]]:
    """Each claimed message's provider, within its rate limit; those with no provider are
    answered here, those with no slot under a rate limit go back to the queue."""
    to_call: list[Call] = []
    answered: list[Outcome] = []
    throttled: list[tuple[int, Throttled]] = []
    for one in claimed:
        outgoing = one.outgoing
        provider = sender.providers.route(outgoing.channel, outgoing.platform)
        if provider is None:
            missing = f"no push provider for {outgoing.platform or 'unknown-platform'} devices"
            answered.append(
                Outcome(outgoing.message_id, ProviderError("permanent", missing), "none")
            )
        elif (wait := sender.take_slot(provider.name)) is not None:
            throttled.append((outgoing.message_id, wait))
        else:
            to_call.append((one, provider))
    if throttled:
        _hand_back(sender, throttled)
    return to_call, answered


def _hand_back(sender: Sender, throttled: list[tuple[int, Throttled]]) -> None:
    """Put messages with no slot under a rate limit back in the queue, due when one frees."""
    now = utcnow()
    try:
        with sender.transaction() as uow:
            for message_id, wait in throttled:
                reason = f"{wait.reason}; next try in {format_duration(wait.wait)}"
                delivery.release(uow.session, message_id, now + wait.wait, now, reason)
    except Exception:  # left `sending`: the scheduler settles them as a stopped worker's
        log.exception("%d rate-limited message(s) could not be put back", len(throttled))
    log.info("%d message(s) wait for a rate limit: %s", len(throttled), throttled[0][1].reason)


def _call(call: Call) -> Answer:
    claimed, provider = call
    message_id = claimed.outgoing.message_id
    try:
        return claimed, provider, provider.send(claimed.outgoing)
    except ProviderError as exc:
        # Providers quote the address they refused; it stays out of logs and status history.
        redacted = ProviderError(exc.kind, redact(exc.reason, claimed.outgoing.to), exc.retry_after)
        log.warning(
            "message %d not sent by %s (%s): %s",
            message_id,
            provider.name,
            redacted.kind,
            redacted.reason,
        )
        return claimed, provider, redacted
    except Exception as exc:  # an adapter bug or a network failure it did not classify
        log.exception("provider %s failed on message %d", provider.name, message_id)
        return claimed, provider, ProviderError("retryable", f"unexpected {type(exc).__name__}")


def _record(sender: Sender, outcomes: list[Outcome]) -> None:
    settings = sender.settings
    attempts, base = settings.max_send_attempts, settings.retry_base_seconds
    try:
        with sender.transaction() as uow:
            delivery.record_results(uow.session, outcomes, utcnow(), attempts, base)
        return
    except Exception:
        if len(outcomes) == 1:
            raise
        log.warning("recording %d results together failed; recording each", len(outcomes))
    for outcome in outcomes:
        try:
            with sender.transaction() as uow:
                delivery.record_results(uow.session, [outcome], utcnow(), attempts, base)
        except Exception:  # left `sending`: the scheduler settles it as a stopped worker's
            log.exception("the result for message %d could not be recorded", outcome.message_id)


def redact(text: str, address: str) -> str:
    """`text` with the recipient's address (any case; for a phone, with or without its '+')
    replaced by <recipient>."""
    forms = {address, address.lstrip("+")} if address else set()
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= 5:
            text = re.sub(re.escape(form), "<recipient>", text, flags=re.IGNORECASE)
    return text


# --- The scheduler's sweep ----------------------------------------------------------------


def sweep_messages(transaction: Transaction, providers: Providers, settings: Settings) -> int:
    """Hand due messages to the broker (deferred ones, retries, and any the broker lost), and
    settle messages whose worker stopped in the middle of a provider call; returns how many
    were handed over. `transaction`'s jobs must go to the broker."""
    now = utcnow()
    grace = dt.timedelta(seconds=settings.sweep_grace_seconds)
    with transaction() as uow:
        due = due_messages(uow.session, now, grace)
        for message in due:
            delivery.enqueue_send(uow.session, message, now)
    stuck_after = dt.timedelta(seconds=settings.stuck_send_seconds)
    with transaction() as uow:
        stuck = stuck_messages(uow.session, now - stuck_after)
        for message in stuck:
            settle_stuck(uow.session, message, providers, now)
    if stuck:
        log.warning("settled %d messages left sending by a stopped worker", len(stuck))
    return len(due)


def due_messages(session: Session, now: dt.datetime, grace: dt.timedelta) -> list[Message]:
    """Lock queued messages that are due and not handed to the broker within `grace`."""
    return list(
        session.scalars(
            select(Message)
            .where(
                Message.status == MessageStatus.QUEUED,
                Message.send_at <= now,
                or_(Message.enqueued_at.is_(None), Message.enqueued_at < now - grace),
            )
            .order_by(Message.send_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )


def stuck_messages(session: Session, claimed_before: dt.datetime) -> list[Message]:
    """Lock messages still `sending` since before `claimed_before`: their worker stopped."""
    return list(
        session.scalars(
            select(Message)
            .where(Message.status == MessageStatus.SENDING, Message.claimed_at < claimed_before)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )


def settle_stuck(
    session: Session, message: Message, providers: Providers, now: dt.datetime
) -> None:
    """A message left `sending` (its worker killed during the provider call) is sent again
    only through a provider that takes an idempotency key; otherwise it fails, as its
    outcome is unknown and sending twice is worse than not at all."""
    # Which provider it went through is not recorded: push may have used any platform's.
    candidates = providers.of_channel(message.channel)
    names = " or ".join(sorted({provider.name for provider in candidates}))
    if candidates and all(provider.idempotent for provider in candidates):
        message.send_at, message.enqueued_at = now, None
        delivery.set_status(
            session,
            message,
            MessageStatus.QUEUED,
            now,
            f"its worker stopped during the call to {names}; "
            "sending again with the same idempotency key",
        )
    else:
        delivery.set_status(
            session,
            message,
            MessageStatus.FAILED,
            now,
            f"its worker stopped during the call to {names}; "
            "not sent again, to avoid sending twice",
        )
