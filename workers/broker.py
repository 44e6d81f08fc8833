"""The one place the Dramatiq broker is built, with its whole middleware list."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries, TimeLimit

from service.kit.db import JobSender
from service.kit.logs import job_context

log = logging.getLogger(__name__)

ONE_HOUR_MS = 60 * 60 * 1000


class JobLogContext(dramatiq.Middleware):
    """Puts the actor, the message id and the retry count on every log line written while a
    job runs (service.kit.logs.job_context), so the lines of one job can be followed."""

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        retries = message.options.get("retries", 0)
        job_context.set(f"[{message.actor_name} msg={message.message_id} retry={retries}] ")

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        job_context.set("")

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        job_context.set("")


def middleware() -> list[dramatiq.Middleware]:
    """Only middleware that acts on our actors: none has a max_age, callbacks, pipelines or
    notify_shutdown, so AgeLimit, Callbacks, Pipelines and ShutdownNotifications are left out."""
    return [
        # First: the "after" hooks run in reverse order, so the other middleware's lines about
        # a job (a retry given up, say) carry its context too.
        JobLogContext(),
        # Kill an actor run that exceeds its time limit, so one stuck job cannot hold a thread.
        TimeLimit(time_limit=ONE_HOUR_MS),
        # Exponential back-off; each actor states its own max_retries.
        Retries(max_retries=5, min_backoff=1_000, max_backoff=5 * 60 * 1000),
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
