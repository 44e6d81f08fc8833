"""Waiting for the embedded worker's background work.

Work on the embedded default's in-process broker is joined: `EmbeddedWorker.join()` returns
once the broker's queues are drained (dramatiq's StubBroker.join and Worker.join). Anything
else, such as the scheduler's sweeps, a server starting or real processes, is polled with
tests.helpers.polling.eventually(), which fails saying what it saw last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import dramatiq
from dramatiq.brokers.stub import StubBroker
from sqlalchemy.engine import Engine

from service.ingest.dispatch import EventDispatcher
from service.models import Event, Message
from tests.helpers.api import events, stored_and_processed
from tests.helpers.engine import db_messages
from tests.helpers.polling import eventually_async
from workers.actors import EVENTS_QUEUE, MESSAGES_QUEUE

T = TypeVar("T")

UNSETTLED = ("queued", "sending")


async def wait_processed(engine: Engine, count: int, timeout: float = 10.0) -> list[Event]:
    """Every stored event once at least `count` are stored and all are processed: for events
    whose jobs are on no broker a test can join (the scheduler's sweep picks them up, or a
    live server's worker runs them)."""
    await eventually_async(
        lambda: stored_and_processed(engine),
        until=lambda counts: counts[0] >= count and counts[0] == counts[1],
        timeout=timeout,
        what=f"{count} events stored and processed (stored, processed)",
    )
    return await asyncio.to_thread(events, engine)


@dataclass
class EmbeddedWorker:
    """The worker that workers.api runs beside the app on the in-process broker."""

    worker: dramatiq.Worker
    dispatcher: EventDispatcher
    engine: Engine

    async def join(self, timeout: float = 10.0) -> None:
        """Return once every job handed to the worker so far has run: those of the events the
        API accepted, of the messages their processing queued, and of what those led to."""
        await self.dispatcher.close()  # the ids it gathers for a few milliseconds, sent now
        await asyncio.to_thread(self._join, timeout)

    def _join(self, timeout: float) -> None:
        broker = self.worker.broker
        assert isinstance(broker, StubBroker), broker
        deadline = time.monotonic() + timeout
        queues = [
            broker.queues[name]
            for queue in (EVENTS_QUEUE, MESSAGES_QUEUE)
            for name in (queue, f"{queue}.DQ")
        ]
        while True:
            for queue_name in (EVENTS_QUEUE, MESSAGES_QUEUE):
                left_ms = max(1, int((deadline - time.monotonic()) * 1000))
                broker.join(queue_name, timeout=left_ms)  # raises a dead-lettered job's error
            self.worker.join()
            # A sent message can lead to events again: done once a round finds nothing new.
            if all(queue.unfinished_tasks == 0 for queue in queues):
                return

    async def processed(self, count: int) -> list[Event]:
        """Every stored event, once a join shows at least `count`, all processed."""
        await self.join()
        await eventually_async(
            self._joined(lambda: stored_and_processed(self.engine)),
            until=lambda counts: counts[0] >= count and counts[0] == counts[1],
            what=f"{count} events stored and processed (stored, processed)",
        )
        return await asyncio.to_thread(events, self.engine)

    async def settled(self, count: int) -> list[Message]:
        """Every message, once a join shows at least `count`, none queued or sending."""
        await self.join()
        await eventually_async(
            self._joined(
                lambda: [(m.id, m.status, m.status_reason) for m in db_messages(self.engine)]
            ),
            until=lambda states: (
                len(states) >= count and all(status not in UNSETTLED for _, status, _ in states)
            ),
            what=f"{count} settled messages (id, status, reason)",
        )
        return await asyncio.to_thread(db_messages, self.engine)

    def _joined(self, read: Callable[[], T]) -> Callable[[], T]:
        """`read` after a join. Joined once more while it does not show the work done: a job
        skips an event or message that a scheduler's sweep holds at that moment, and the sweep
        queues it again once it commits."""

        def join_then_read() -> T:
            self._join(timeout=10.0)
            return read()

        return join_then_read
