"""The scheduler: due journeys, inactivity timers and due messages, and sweeps that
re-enqueue work the broker lost.

Any number of replicas may run: due rows and swept rows are claimed with row locks
(FOR UPDATE SKIP LOCKED on PostgreSQL), so each is handled once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from workers.delivery import sweep_messages
from workers.events import sweep_unprocessed
from workers.journeys import run_due
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def _guarded(task: Callable[[Runtime], int], runtime: Runtime) -> None:
    try:
        task(runtime)
    except Exception:
        log.exception("%s failed; it runs again at the next tick", task.__name__)


def run_scheduler(runtime: Runtime, stop: threading.Event) -> None:
    settings = runtime.settings
    log.info(
        "scheduler started: due work every %.1fs, sweeps every %.0fs",
        settings.scheduler_interval_seconds,
        settings.sweep_interval_seconds,
    )
    last_sweep = 0.0
    while not stop.is_set():
        _guarded(run_due, runtime)
        _guarded(sweep_messages, runtime)
        if time.monotonic() - last_sweep >= settings.sweep_interval_seconds:
            _guarded(sweep_unprocessed, runtime)
            last_sweep = time.monotonic()
        stop.wait(settings.scheduler_interval_seconds)
    log.info("scheduler stopped")
