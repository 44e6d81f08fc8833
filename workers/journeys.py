"""The scheduler's time-driven work (due journeys, inactivity timers, scheduled rules): it
loads the live rules and calls service.engine.due."""

from __future__ import annotations

import logging

from service.engine import due
from service.engine.registry import RulesUnavailable
from service.kit.db import utcnow
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def run_due(runtime: Runtime) -> int:
    """Wake every due journey and user; returns how many."""
    try:
        rules = runtime.rules.current()
    except RulesUnavailable as exc:
        log.error("due journeys wait: %s", exc)
        return 0
    if rules is None:
        return 0
    return due.wake_due(runtime.unit_of_work, rules, utcnow())
