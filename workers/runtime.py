"""What a worker, scheduler or embedded process holds: settings, engine, broker, actors."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass

import dramatiq
from sqlalchemy.engine import Engine

from service.delivery.sending import Providers
from service.engine.registry import RuleRegistry
from service.kit.db import JobSender, SyncUnitOfWork, create_sync_engine, unit_of_work
from service.kit.settings import Settings
from workers.broker import build_broker, job_sender
from workers.rate_limits import SendLimits, build_send_limits


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    broker: dramatiq.Broker
    send_job: JobSender
    rules: RuleRegistry
    send_limits: SendLimits
    providers: Providers  # the adapters, built on first send
    _send_pool: ThreadPoolExecutor | None = None

    def unit_of_work(self) -> AbstractContextManager[SyncUnitOfWork]:
        """One transaction; the jobs queued in it go to the broker once it commits."""
        return unit_of_work(self.engine, self.send_job)

    def send_pool(self) -> ThreadPoolExecutor:
        """Threads for provider calls: one job's messages are sent side by side, as a
        provider call is mostly waiting on the network."""
        if self._send_pool is None:
            self._send_pool = ThreadPoolExecutor(
                self.settings.send_concurrency, thread_name_prefix="send"
            )
        return self._send_pool

    def close(self) -> None:
        if self._send_pool is not None:
            self._send_pool.shutdown()
        self.broker.close()
        self.send_limits.close()
        self.engine.dispose()


def open_runtime(settings: Settings) -> Runtime:
    """A runtime with no actors declared yet (workers.actors.build_runtime declares them)."""
    broker = build_broker(settings.broker_url)
    return Runtime(
        settings=settings,
        engine=create_sync_engine(settings.database_url, settings.db_pool_size),
        broker=broker,
        send_job=job_sender(broker),
        rules=RuleRegistry(settings.rules_dir),
        send_limits=build_send_limits(settings),
        providers=Providers(settings),
    )


def freeze_startup_objects() -> None:
    """Keep what start-up built (modules, models, the rule set, the runtime) out of the
    garbage collector's sight for the rest of the process, so a collection no longer walks it
    all: in the API that was about a fifth of a /v1/track request's CPU. Only for processes
    that live as long as what they built (not for tests that build many apps in one)."""
    gc.collect()
    gc.freeze()
