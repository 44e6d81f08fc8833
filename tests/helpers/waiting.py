"""Waiting for the embedded worker's background work.

Work on the embedded default's in-process broker is joined: `EmbeddedWorker.join()` returns
once the broker's queues are drained (dramatiq's StubBroker.join and Worker.join). Anything
else, such as the scheduler's sweeps, a server starting or real processes, is polled with
tests.helpers.polling.eventually(), which fails saying what it saw last.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import dramatiq
from dramatiq.brokers.stub import StubBroker
from sqlalchemy.engine import Engine

from service.ingest.dispatch import EventDispatcher
from service.models import Event, Message
from tests.helpers.api import events, stored_and_processed
from tests.helpers.engine import db_messages
from tests.helpers.polling import eventually_async
from workers.actors import EVENTS_QUEUE, MESSAGES_QUEUE

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
        """Join, then every stored event, checked to be at least `count`, all processed."""
        await self.join()
        rows = await asyncio.to_thread(events, self.engine)
        done = sum(1 for e in rows if e.processed_at)
        assert len(rows) >= count and done == len(rows), (
            f"{done}/{len(rows)} events processed, expected {count}"
        )
        return rows

    async def settled(self, count: int) -> list[Message]:
        """Join, then every message, checked to be at least `count`, none queued or sending."""
        await self.join()
        rows = await asyncio.to_thread(db_messages, self.engine)
        states = [(m.id, m.status, m.status_reason) for m in rows]
        assert len(rows) >= count and all(m.status not in UNSETTLED for m in rows), (
            f"expected {count} settled messages, found {states}"
        )
        return rows
