"""The API process: service.app's FastAPI app with this process's broker. On the in-process
broker (the embedded default) the worker and the scheduler run in the same process, in
threads."""

from __future__ import annotations

import dataclasses
import logging
import threading

from fastapi import FastAPI

from service.app import Plumbing, create_app
from service.kit.logs import configure_logging
from service.kit.settings import Settings, get_settings
from workers.actors import build_runtime
from workers.broker import ping
from workers.runtime import freeze_startup_objects
from workers.scheduler import run_scheduler
from workers.worker import start_worker

log = logging.getLogger(__name__)

EMBEDDED_WORKER_THREADS = 4


def create_api(settings: Settings | None = None) -> FastAPI:
    """The app; without settings (uvicorn's factory, one app per API worker process, living
    as long as it) it reads them from the environment and sets up logging itself."""
    if settings is not None:  # tests and code that embeds the app: many apps in one process
        return create_app(settings, plumbing)
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings, _lifelong_plumbing)


def _lifelong_plumbing(settings: Settings) -> Plumbing:
    """The plumbing of an app that lasts as long as its process: once it has started, what
    start-up built is kept out of the garbage collector's sight."""
    pipes = plumbing(settings)
    start = pipes.start

    def start_and_freeze() -> None:
        start()
        freeze_startup_objects()

    return dataclasses.replace(pipes, start=start_and_freeze)


def plumbing(settings: Settings) -> Plumbing:
    runtime = build_runtime(settings)
    if not settings.broker_url.startswith("memory://"):
        return Plumbing(
            runtime.send_job, lambda: ping(runtime.broker), runtime.rules, stop=runtime.close
        )
    stop = threading.Event()
    scheduler = threading.Thread(
        target=run_scheduler, args=(runtime, stop), name="scheduler", daemon=True
    )
    workers = []

    def start() -> None:
        workers.append(start_worker(runtime, EMBEDDED_WORKER_THREADS))
        scheduler.start()
        log.info("embedded mode: worker and scheduler run in this process")

    def close() -> None:
        stop.set()
        for worker in workers:
            worker.stop()
        if scheduler.is_alive():
            scheduler.join()
        runtime.close()

    return Plumbing(runtime.send_job, lambda: ping(runtime.broker), runtime.rules, start, close)
