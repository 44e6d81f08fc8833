"""The scheduler: periodic sweeps that re-enqueue work the broker lost.

Any number of replicas may run: each sweep claims rows with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import logging
import threading

from workers.events import sweep_unprocessed
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def run_scheduler(runtime: Runtime, stop: threading.Event) -> None:
    interval = runtime.settings.sweep_interval_seconds
    log.info("scheduler started: sweeping every %.0fs", interval)
    while not stop.is_set():
        try:
            sweep_unprocessed(runtime)
        except Exception:
            log.exception("sweep failed; trying again in %.0fs", interval)
        stop.wait(interval)
    log.info("scheduler stopped")
