"""Waiting for the background work of the embedded worker."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.engine import Engine

from service.models import Event
from tests.helpers.api import events


async def wait_processed(engine: Engine, count: int, timeout: float = 10.0) -> list[Event]:
    """Wait until `count` events exist and all are processed; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await asyncio.to_thread(events, engine)
        if len(rows) >= count and all(e.processed_at for e in rows):
            return rows
        if time.monotonic() > deadline:
            done = sum(1 for e in rows if e.processed_at)
            raise AssertionError(f"{done}/{len(rows)} events processed, expected {count}")
        await asyncio.sleep(0.05)
