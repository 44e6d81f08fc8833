"""The scheduler's time-driven work: due journeys, inactivity timers and scheduled rules."""

from __future__ import annotations

import logging

from service.engine import due, schedules
from service.engine.registry import RulesUnavailable
from service.kit.db import unit_of_work, utcnow
from workers.runtime import Runtime

log = logging.getLogger(__name__)

BATCH = 500


def run_due(runtime: Runtime) -> int:
    """Wake every due journey and user, each in its own transaction; returns how many."""
    try:
        rules = runtime.rules.current()
    except RulesUnavailable as exc:
        log.error("due journeys wait: %s", exc)
        return 0
    if rules is None:
        return 0
    now = utcnow()
    handled = 0
    with unit_of_work(runtime.engine) as uow:
        journey_ids = due.due_journey_ids(uow.session, now, BATCH)
        user_ids = due.due_user_ids(uow.session, now, BATCH)
    for journey_id in journey_ids:
        with unit_of_work(runtime.engine, runtime.send_job) as uow:
            handled += due.run_journey(uow.session, rules, journey_id, now)
    for user_id in user_ids:
        with unit_of_work(runtime.engine, runtime.send_job) as uow:
            handled += due.run_user(uow.session, rules, user_id, now)
    if rules.on_schedule:
        with unit_of_work(runtime.engine, runtime.send_job) as uow:
            handled += schedules.fire_due(uow.session, rules, now)
    if handled:
        log.info("woke %d due journeys and users", handled)
    return handled
