"""Sending messages: the send_message actor and the scheduler's sweep of due messages."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import or_, select

from service.delivery import service as delivery
from service.delivery.links import secret_key
from service.delivery.models import Message
from service.delivery.providers import Provider, ProviderError, Sent
from service.delivery.service import Links
from service.engine.durations import format_duration
from service.kit.db import unit_of_work, utcnow
from workers.providers import load_provider
from workers.runtime import Runtime

log = logging.getLogger(__name__)

SWEEP_BATCH = 1000


def providers(runtime: Runtime) -> dict[str, Provider]:
    """The adapters by channel, push ones by device platform: 'email', 'sms', 'push:ios',
    'push:*' (any other platform)."""
    settings = runtime.settings
    if runtime.providers is None:
        loaded = {
            "email": load_provider(settings.email_provider, settings),
            "sms": load_provider(settings.sms_provider, settings),
        }
        for platform, name in settings.push_providers.items():
            loaded[f"push:{platform}"] = load_provider(name, settings)
        runtime.providers = loaded
    return runtime.providers


def provider_for(runtime: Runtime, channel: str, platform: str | None) -> Provider | None:
    by_key = providers(runtime)
    if channel != "push":
        return by_key.get(channel)
    return by_key.get(f"push:{platform}") or by_key.get("push:*")


def send_message(runtime: Runtime, message_id: int) -> None:
    rules = runtime.rules.current()
    if rules is None:
        log.error("message %d waits: there is no rules folder to render its template", message_id)
        return
    links = Links(runtime.settings.public_url, secret_key(runtime.settings))
    # Before the claim: a provider that cannot load must leave the message queued, not
    # claimed and stuck in `sending`.
    providers(runtime)
    with unit_of_work(runtime.engine) as uow:
        claimed = delivery.claim(uow.session, rules, links, message_id, utcnow())
    if claimed is None:
        return
    outgoing = claimed.outgoing
    provider = provider_for(runtime, outgoing.channel, outgoing.platform)
    if provider is None:
        with unit_of_work(runtime.engine) as uow:
            delivery.record_result(
                uow.session,
                message_id,
                ProviderError("permanent", f"no push provider for {outgoing.platform} devices"),
                "none",
                utcnow(),
                runtime.settings.max_send_attempts,
            )
        return
    if (throttled := runtime.send_limits.take_slot(provider.name)) is not None:
        now = utcnow()
        reason = f"{throttled.reason}; next try in {format_duration(throttled.wait)}"
        with unit_of_work(runtime.engine) as uow:
            delivery.release(uow.session, message_id, now + throttled.wait, now, reason)
        log.info("message %d waits: %s", message_id, reason)
        return
    result: Sent | ProviderError
    try:
        result = provider.send(claimed.outgoing)
    except ProviderError as exc:
        result = exc
    except Exception as exc:  # an adapter bug or a network failure it did not classify
        log.exception("provider %s failed on message %d", provider.name, message_id)
        result = ProviderError("retryable", f"unexpected {type(exc).__name__}")
    with unit_of_work(runtime.engine) as uow:
        delivery.record_result(
            uow.session,
            message_id,
            result,
            provider.name,
            utcnow(),
            runtime.settings.max_send_attempts,
            runtime.settings.retry_base_seconds,
            address=outgoing.to,
        )
    if isinstance(result, ProviderError):
        log.warning(
            "message %d not sent by %s (%s): %s",
            message_id,
            provider.name,
            result.kind,
            result.reason,
        )


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
