"""The send_message actor's work and the scheduler's sweep of due messages: each loads what
its process holds and calls service.delivery.sending."""

from __future__ import annotations

from functools import partial

from service.delivery import sending
from service.kit.db import unit_of_work
from workers.runtime import Runtime


def send_message(runtime: Runtime, message_id: int) -> None:
    send_messages(runtime, [message_id])


def send_messages(runtime: Runtime, message_ids: list[int]) -> None:
    # RulesUnavailable propagates: Dramatiq retries the job, and the sweep hands it over again.
    sending.send_messages(sender(runtime), runtime.rules.current(), message_ids)


def sweep_messages(runtime: Runtime) -> int:
    return sending.sweep_messages(runtime.unit_of_work, runtime.providers, runtime.settings)


def sender(runtime: Runtime) -> sending.Sender:
    return sending.Sender(
        settings=runtime.settings,
        providers=runtime.providers,
        # No job sender: what a claim queues (a fallback message) goes out with the sweep.
        transaction=partial(unit_of_work, runtime.engine),
        take_slot=runtime.send_limits.take_slot,
        call_all=lambda call, calls: runtime.send_pool().map(call, calls),
    )
