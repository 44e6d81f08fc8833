"""The one place the Dramatiq broker is built, with its whole middleware list."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from service.kit.db import JobSender

log = logging.getLogger(__name__)

ONE_HOUR_MS = 60 * 60 * 1000


def middleware() -> list[dramatiq.Middleware]:
    return [
        # Drop messages older than an actor's max_age (unset for ours: the sweeper re-sends
        # lost work, so an old message is still worth running).
        AgeLimit(),
        # Kill an actor run that exceeds its time limit, so one stuck job cannot hold a thread.
        TimeLimit(time_limit=ONE_HOUR_MS),
        # Let long actors notice a shutdown.
        ShutdownNotifications(),
        # on_success / on_failure callbacks and pipelines, for composed jobs.
        Callbacks(),
        Pipelines(),
        # Exponential back-off; each actor states its own max_retries.
        Retries(max_retries=5, min_backoff=1_000, max_backoff=5 * 60 * 1000),
        # Exposes the message being processed (its id and retry count appear in logs).
        CurrentMessage(),
    ]


def build_broker(url: str) -> dramatiq.Broker:
    """memory:// runs jobs in this process; redis:// and amqp:// are the production brokers."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return StubBroker(middleware=middleware())
    if scheme in ("redis", "rediss"):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url, middleware=middleware())  # type: ignore[no-untyped-call]
    if scheme in ("amqp", "amqps"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url, middleware=middleware())
    raise ValueError(f"LIFELINE_BROKER_URL: unsupported scheme {scheme!r} (memory, redis, amqp)")


def job_sender(broker: dramatiq.Broker) -> JobSender:
    """Send jobs by actor name. A broker failure is logged, not raised: the work is already
    committed in the database, and the sweeper enqueues it again."""

    def send(actor_name: str, *args: Any) -> None:
        try:
            broker.get_actor(actor_name).send(*args)
        except Exception:
            log.warning(
                "could not enqueue %s; the scheduler's sweep will retry it",
                actor_name,
                exc_info=True,
            )

    return send


def ping(broker: dramatiq.Broker) -> None:
    """Raise if the broker cannot be reached (for /readyz)."""
    client = getattr(broker, "client", None)
    if client is not None:  # Redis
        client.ping()
        return
    connection = getattr(broker, "connection", None)  # RabbitMQ: connects on first use
    if connection is not None and not connection.is_open:
        raise ConnectionError("RabbitMQ connection is closed")
