"""The process_events actor's work and the scheduler's sweep of unprocessed events: each
loads what its process holds and calls service.processing."""

from __future__ import annotations

from service.processing import service as processing
from workers.runtime import Runtime


def process_events(runtime: Runtime, event_ids: list[int]) -> None:
    # RulesUnavailable propagates: Dramatiq retries the job, and the sweep enqueues it again.
    processing.process_group(runtime.unit_of_work, event_ids, runtime.rules.current())


def sweep_unprocessed(runtime: Runtime) -> int:
    return processing.sweep_unprocessed(runtime.unit_of_work, runtime.settings.sweep_grace_seconds)
