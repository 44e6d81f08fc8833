"""Actors and sweeps for event processing. Business logic lives in service.processing."""

from __future__ import annotations

import datetime as dt
import logging

from service.kit.db import unit_of_work, utcnow
from service.kit.jobs import PROCESS_EVENTS
from service.processing import service as processing
from workers.runtime import Runtime

log = logging.getLogger(__name__)

SWEEP_BATCH = 1000


def process_events(runtime: Runtime, event_ids: list[int]) -> None:
    """Process a group of events in one transaction. If the group fails, each event is tried
    on its own, so one event that cannot be processed does not hold up the others."""
    rules = runtime.rules.current()  # RulesUnavailable: retried, and swept again later
    try:
        with unit_of_work(runtime.engine, runtime.send_job) as uow:
            processing.process_events(uow.session, event_ids, rules)
        return
    except Exception:
        if len(event_ids) == 1:
            raise
        log.warning(
            "processing %d events together failed; trying each on its own",
            len(event_ids),
            exc_info=True,
        )
    failed = []
    for event_id in event_ids:
        try:
            with unit_of_work(runtime.engine, runtime.send_job) as uow:
                processing.process_events(uow.session, [event_id], rules)
        except Exception:
            log.exception("event %d could not be processed; it stays unprocessed", event_id)
            failed.append(event_id)
    if failed:
        raise ProcessingFailed(f"events {failed} could not be processed; will retry")


class ProcessingFailed(Exception):
    pass


def sweep_unprocessed(runtime: Runtime) -> int:
    """Enqueue again the events the broker lost (or a crashed worker left); returns how many."""
    older_than = utcnow() - dt.timedelta(seconds=runtime.settings.sweep_grace_seconds)
    total = 0
    while True:
        with unit_of_work(runtime.engine, runtime.send_job) as uow:
            ids = processing.unprocessed_event_ids(uow.session, older_than, SWEEP_BATCH)
            for start in range(0, len(ids), 100):
                uow.enqueue(PROCESS_EVENTS, ids[start : start + 100])
        total += len(ids)
        if len(ids) < SWEEP_BATCH:
            break
    if total:
        log.warning(
            "re-enqueued %d events not processed within %.0fs",
            total,
            runtime.settings.sweep_grace_seconds,
        )
    return total
