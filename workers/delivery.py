"""Sending messages: the send_message actor (a group of message ids per job) and the
scheduler's sweep of due messages."""

from __future__ import annotations

import datetime as dt
import logging
import re

from sqlalchemy import or_, select

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
from service.kit.db import unit_of_work, utcnow
from service.kit.durations import format_duration
from service.models import Message
from workers.rate_limits import Throttled
from workers.runtime import Runtime

log = logging.getLogger(__name__)

SWEEP_BATCH = 1000


def providers(runtime: Runtime) -> dict[str, Provider]:
    """The adapters by channel, push ones by device platform: 'email', 'sms', 'push:ios',
    'push:*' (any other platform)."""
    settings = runtime.settings
    if runtime.providers is None:
        accounts = configured_accounts(settings)  # the providers file, read once
        by_key = {"email": settings.email_provider, "sms": settings.sms_provider}
        by_key |= {f"push:{p}": name for p, name in settings.push_providers.items()}
        runtime.providers = {
            key: build_adapter(accounts[name], settings) for key, name in by_key.items()
        }
    return runtime.providers


def provider_for(runtime: Runtime, channel: str, platform: str | None) -> Provider | None:
    by_key = providers(runtime)
    if channel != "push":
        return by_key.get(channel)
    return by_key.get(f"push:{platform}") or by_key.get("push:*")


def send_message(runtime: Runtime, message_id: int) -> None:
    send_messages(runtime, [message_id])


def send_messages(runtime: Runtime, message_ids: list[int]) -> None:
    """Send a group of messages: one transaction claims them all, the provider calls run
    side by side on the runtime's send pool, one transaction records every answer. If the
    group cannot be claimed or recorded together, each message is tried on its own, so one
    message that breaks something does not hold up the others."""
    rules = runtime.rules.current()
    if rules is None:
        log.error(
            "%d message(s) wait: there is no rules folder to render their templates",
            len(message_ids),
        )
        return
    links = Links(runtime.settings.public_url, secret_key(runtime.settings))
    # Before the claim: a provider that cannot load must leave the messages queued, not
    # claimed and stuck in `sending`. The scheduler hands them over again once it is fixed.
    try:
        providers(runtime)
    except (ProviderConfigError, LookupError) as exc:
        log.error("%d message(s) wait: a provider cannot be loaded: %s", len(message_ids), exc)
        return
    try:
        with unit_of_work(runtime.engine) as uow:
            claimed = delivery.claim_many(uow.session, rules, links, message_ids, utcnow())
    except Exception:
        if len(message_ids) == 1:
            raise
        log.warning("claiming %d messages together failed; trying each", len(message_ids))
        for message_id in message_ids:
            try:
                send_messages(runtime, [message_id])
            except Exception:  # it stays queued; the scheduler hands it over again
                log.exception("message %d could not be claimed", message_id)
        return
    if not claimed:
        return
    to_call, outcomes = _route(runtime, claimed)
    calls = runtime.send_pool().map(_call, to_call)
    outcomes += [Outcome(c.outgoing.message_id, r, p.name, c.outgoing.to) for c, p, r in calls]
    _record(runtime, outcomes)


Call = tuple[Claimed, Provider]


def _route(runtime: Runtime, claimed: list[Claimed]) -> tuple[list[Call], list[Outcome]]:
    """Each claimed message's provider, within its rate limit; those with no provider are
    answered here, those with no slot under a rate limit go back to the queue."""
    to_call: list[Call] = []
    answered: list[Outcome] = []
    throttled: list[tuple[int, Throttled]] = []
    for one in claimed:
        outgoing = one.outgoing
        provider = provider_for(runtime, outgoing.channel, outgoing.platform)
        if provider is None:
            missing = f"no push provider for {outgoing.platform or 'unknown-platform'} devices"
            answered.append(
                Outcome(outgoing.message_id, ProviderError("permanent", missing), "none")
            )
        elif (wait := runtime.send_limits.take_slot(provider.name)) is not None:
            throttled.append((outgoing.message_id, wait))
        else:
            to_call.append((one, provider))
    if throttled:
        now = utcnow()
        try:
            with unit_of_work(runtime.engine) as uow:
                for message_id, wait in throttled:
                    reason = f"{wait.reason}; next try in {format_duration(wait.wait)}"
                    delivery.release(uow.session, message_id, now + wait.wait, now, reason)
        except Exception:  # left `sending`: the scheduler settles them as a stopped worker's
            log.exception("%d rate-limited message(s) could not be put back", len(throttled))
        log.info("%d message(s) wait for a rate limit: %s", len(throttled), throttled[0][1].reason)
    return to_call, answered


def _call(call: Call) -> tuple[Claimed, Provider, Sent | ProviderError]:
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


def _record(runtime: Runtime, outcomes: list[Outcome]) -> None:
    settings = runtime.settings
    attempts, base = settings.max_send_attempts, settings.retry_base_seconds
    try:
        with unit_of_work(runtime.engine) as uow:
            delivery.record_results(uow.session, outcomes, utcnow(), attempts, base)
        return
    except Exception:
        if len(outcomes) == 1:
            raise
        log.warning("recording %d results together failed; recording each", len(outcomes))
    for outcome in outcomes:
        try:
            with unit_of_work(runtime.engine) as uow:
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


def sweep_messages(runtime: Runtime) -> int:
    """Hand due messages to the broker (deferred ones, retries, and any the broker lost), and
    settle messages whose worker stopped in the middle of a provider call."""
    now = utcnow()
    grace = dt.timedelta(seconds=runtime.settings.sweep_grace_seconds)
    with unit_of_work(runtime.engine, runtime.send_job) as uow:
        due = list(
            uow.session.scalars(
                select(Message)
                .where(
                    Message.status == "queued",
                    Message.send_at <= now,
                    or_(Message.enqueued_at.is_(None), Message.enqueued_at < now - grace),
                )
                .order_by(Message.send_at)
                .limit(SWEEP_BATCH)
                .with_for_update(skip_locked=True)
            )
        )
        for message in due:
            delivery.enqueue_send(uow.session, message, now)
    _settle_stuck(runtime, now)
    return len(due)


def _settle_stuck(runtime: Runtime, now: dt.datetime) -> None:
    """A message left `sending` (its worker killed during the provider call) is sent again
    only through a provider that takes an idempotency key; otherwise it fails, as its
    outcome is unknown and sending twice is worse than not at all."""
    stuck_after = dt.timedelta(seconds=runtime.settings.stuck_send_seconds)
    with unit_of_work(runtime.engine, runtime.send_job) as uow:
        stuck = list(
            uow.session.scalars(
                select(Message)
                .where(Message.status == "sending", Message.claimed_at < now - stuck_after)
                .limit(SWEEP_BATCH)
                .with_for_update(skip_locked=True)
            )
        )
        for message in stuck:
            # Push may have gone through any of its platforms' providers.
            candidates = [
                provider
                for key, provider in providers(runtime).items()
                if key.partition(":")[0] == message.channel
            ]
            names = " or ".join(sorted({provider.name for provider in candidates}))
            if candidates and all(provider.idempotent for provider in candidates):
                message.send_at, message.enqueued_at = now, None
                delivery.set_status(
                    uow.session,
                    message,
                    "queued",
                    now,
                    f"its worker stopped during the call to {names}; "
                    "sending again with the same idempotency key",
                )
            else:
                delivery.set_status(
                    uow.session,
                    message,
                    "failed",
                    now,
                    f"its worker stopped during the call to {names}; "
                    "not sent again, to avoid sending twice",
                )
        if stuck:
            log.warning("settled %d messages left sending by a stopped worker", len(stuck))
