"""Every actor, declared on a runtime's broker. Actors take ids and are idempotent."""

from __future__ import annotations

import dramatiq

from service.kit.jobs import PROCESS_EVENTS, SEND_MESSAGE
from service.kit.settings import Settings
from workers import delivery, events
from workers.runtime import Runtime, open_runtime

EVENTS_QUEUE = "events"
MESSAGES_QUEUE = "messages"


def declare_actors(runtime: Runtime) -> None:
    def process_events(event_ids: list[int]) -> None:
        events.process_events(runtime, event_ids)

    def send_message(message_ids: list[int] | int) -> None:
        # A list since jobs carry a transaction's messages together; a single id still works.
        ids = message_ids if isinstance(message_ids, list) else [message_ids]
        delivery.send_messages(runtime, ids)

    dramatiq.actor(
        actor_name=PROCESS_EVENTS,
        queue_name=EVENTS_QUEUE,
        broker=runtime.broker,
        # A lost or failed run is also picked up by the sweeper; retries just make it sooner.
        max_retries=5,
    )(process_events)
    dramatiq.actor(
        actor_name=SEND_MESSAGE,
        queue_name=MESSAGES_QUEUE,
        broker=runtime.broker,
        # Provider errors are retried by delivery itself (back-off stored on the message);
        # these retries cover only crashes before the claim, such as a lost database.
        max_retries=3,
    )(send_message)


def build_runtime(settings: Settings) -> Runtime:
    """What a process needs to run or send jobs: its runtime, with every actor declared."""
    runtime = open_runtime(settings)
    declare_actors(runtime)
    return runtime
