"""Every actor, declared on the runtime's broker. Actors take ids and are idempotent."""

from __future__ import annotations

import dramatiq

from service.ingest.service import PROCESS_EVENTS
from workers import events
from workers.runtime import Runtime

EVENTS_QUEUE = "events"


def declare_actors(runtime: Runtime) -> None:
    def process_events(event_ids: list[int]) -> None:
        events.process_events(runtime, event_ids)

    dramatiq.actor(
        actor_name=PROCESS_EVENTS,
        queue_name=EVENTS_QUEUE,
        broker=runtime.broker,
        # A lost or failed run is also picked up by the sweeper; retries just make it sooner.
        max_retries=5,
    )(process_events)
