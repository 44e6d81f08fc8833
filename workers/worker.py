"""Worker processes: Dramatiq workers consuming every queue, supervised by one parent."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from types import FrameType

import dramatiq

from service.kit.logs import configure_logging
from service.kit.settings import Settings
from workers.actors import build_runtime
from workers.runtime import Runtime, freeze_startup_objects

log = logging.getLogger(__name__)


def start_worker(runtime: Runtime, threads: int) -> dramatiq.Worker:
    worker = dramatiq.Worker(
        runtime.broker, worker_threads=threads, worker_timeout=runtime.settings.worker_timeout_ms
    )
    worker.start()
    return worker


def _child(settings: Settings, threads: int) -> None:
    configure_logging(settings.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime = build_runtime(settings)
    runtime.rules.reload_if_changed()
    freeze_startup_objects()
    worker = start_worker(runtime, threads)
    log.info("worker process ready: %d threads", threads)
    stop.wait()
    log.info("worker process stopping: finishing jobs in progress")
    worker.stop()
    runtime.close()


def run_workers(settings: Settings, processes: int, threads: int) -> None:
    """Run `processes` worker processes until SIGTERM or SIGINT; restart any that dies."""
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def spawn() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=_child, args=(settings, threads), daemon=False)
        process.start()
        return process

    children = [spawn() for _ in range(processes)]
    while not stopping.is_set():
        for i, child in enumerate(children):
            if not child.is_alive():
                log.error(
                    "worker process %d exited with %s; starting another", child.pid, child.exitcode
                )
                children[i] = spawn()
        stopping.wait(1.0)
    for child in children:
        if child.is_alive() and child.pid is not None:
            child.terminate()
    for child in children:
        child.join()
    log.info("all worker processes stopped")
