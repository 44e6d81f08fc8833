"""The `lifeline` executable: service.cli's commands, plus the processes that run Lifeline
(serve, api, worker, scheduler), which need the broker and the actors. As in service.cli,
each command imports what it uses when it runs."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Annotated

import typer

from service import cli
from service.cli import RUNNING, app, load_settings, migrate_database
from service.kit.settings import Settings

Host = Annotated[str, typer.Option(metavar="HOST", help="the address to listen on")]
Port = Annotated[int, typer.Option(min=0, max=65535, help="the port to listen on")]
# Many processes with few threads each: a thread back from the database or a provider
# otherwise waits for the GIL behind the others (see docs/scaling.md).
DEFAULT_PROCESSES = 2 * (os.cpu_count() or 1)


def uvicorn_run(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """The API on uvicorn; each of its worker processes builds the app with workers.api's
    factory."""
    import uvicorn

    uvicorn.run(
        "workers.api:create_api",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@app.command(rich_help_panel=RUNNING)
def serve(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """Run everything in one process; the embedded default needs no other service.

    Migrates the database first."""
    settings = load_settings()
    migrate_database(settings)
    print(
        f"Lifeline on http://{host}:{port}  (database {settings.database_url}, "
        f"broker {settings.broker_url}); create a write key with `lifeline sources create NAME`"
    )
    uvicorn_run(settings, host, port)


@app.command(rich_help_panel=RUNNING)
def api(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """Run the HTTP API (production; run migrate first)."""
    uvicorn_run(load_settings(), host, port, workers)


@app.command(rich_help_panel=RUNNING)
def worker(
    processes: Annotated[
        int, typer.Option(min=1, help="worker processes", show_default="twice the CPU count")
    ] = DEFAULT_PROCESSES,
    threads: Annotated[int, typer.Option(min=1, help="jobs each process runs at once")] = 2,
) -> None:
    """Run Dramatiq worker processes (production)."""
    from workers.worker import run_workers

    settings = load_settings()
    if settings.broker_url.startswith("memory://"):
        print(
            "lifeline worker needs a shared broker: set LIFELINE_BROKER_URL to redis://... or "
            "amqp://... (with the in-process broker, `lifeline serve` runs the worker itself)",
            file=sys.stderr,
        )
        raise typer.Exit(2)
    run_workers(settings, processes, threads)


@app.command(rich_help_panel=RUNNING)
def scheduler() -> None:
    """Run the scheduler: due journeys and messages, and sweeps that re-enqueue lost work."""
    from workers.actors import build_runtime
    from workers.scheduler import run_scheduler

    settings = load_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime = build_runtime(settings)
    try:
        run_scheduler(runtime, stop)
    finally:
        runtime.close()


def console() -> None:
    """The `lifeline` executable (pyproject's [project.scripts])."""
    cli.console()
