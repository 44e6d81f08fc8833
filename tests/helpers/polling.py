"""Polling, for background work a test cannot join: the scheduler's sweeps, a server starting,
real processes. Work on the embedded worker's broker is joined instead
(tests.helpers.waiting.EmbeddedWorker)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    read: Callable[[], T],
    *,
    until: Callable[[T], object] = bool,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """Call `read` until `until` holds for what it returns (by default: until that is truthy),
    and return that. After `timeout` seconds, fail naming `what` and the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}; last seen: {value!r}"
            )
        time.sleep(interval)


async def eventually_async(
    read: Callable[[], T],
    *,
    until: Callable[[T], object] = bool,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """eventually() from an async test: `read` runs in a thread, so the event loop (and the
    app's own background tasks on it) carries on meanwhile."""
    return await asyncio.to_thread(
        eventually, read, until=until, timeout=timeout, interval=interval, what=what
    )


def refused(host: str, port: int) -> OSError | None:
    """Why a connection to host:port fails, or None once something accepts it."""
    try:
        socket.create_connection((host, port), timeout=0.2).close()
    except OSError as error:
        return error
    return None
