"""Handing new events to the workers, many requests' worth per broker message.

A broker round trip per request cost more than the request's own INSERT, so ids accepted by
concurrent requests are gathered for a few milliseconds and sent together. Losing the ids
held here (a crash) loses no work: the events are committed, and the scheduler's sweep
enqueues whatever stays unprocessed.
"""

from __future__ import annotations

import asyncio
import logging

from service.kit.db import JobSender
from service.kit.jobs import PROCESS_EVENTS

log = logging.getLogger(__name__)


class EventDispatcher:
    def __init__(self, send_job: JobSender, max_batch: int = 100, max_delay: float = 0.005):
        self.send_job = send_job
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._pending: list[int] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def add(self, event_ids: list[int]) -> None:
        self._pending.extend(event_ids)
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_delay, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ids, self._pending = self._pending, []
        if ids:
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._send, ids))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    def _send(self, ids: list[int]) -> None:
        for start in range(0, len(ids), self.max_batch):
            self.send_job(PROCESS_EVENTS, ids[start : start + self.max_batch])

    async def close(self) -> None:
        """Send what is pending and wait for sends in flight (at shutdown)."""
        self._flush()
        if self._sending:
            await asyncio.gather(*self._sending)
