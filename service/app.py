"""The FastAPI application. With the in-process broker it also runs the worker and scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.delivery.endpoints import links_router
from service.delivery.endpoints import router as delivery_router
from service.delivery.webhooks import router as webhooks_router
from service.engine.endpoints import router as rules_router
from service.ingest.dispatch import EventDispatcher
from service.ingest.endpoints import router as ingest_router
from service.ingest.schemas import InvalidRequest
from service.ingest.sources import SourceCache
from service.ingest.writer import event_writer
from service.kit.db import create_async_db_engine
from service.kit.http import JSON
from service.kit.logs import configure_logging
from service.kit.settings import Settings, get_settings
from service.kit.state import AppState
from service.users.endpoints import router as users_router
from workers.broker import ping
from workers.runtime import build_runtime
from workers.scheduler import run_scheduler
from workers.worker import start_worker

log = logging.getLogger(__name__)

EMBEDDED_WORKER_THREADS = 4


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; without settings (uvicorn's factory, one per API worker process) it reads
    them from the environment and sets up logging itself."""
    if settings is None:
        settings = get_settings()
        configure_logging(settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = build_runtime(settings)
        engine = create_async_db_engine(settings.database_url, settings.db_pool_size)
        app.state.lifeline = AppState(
            settings=settings,
            engine=engine,
            sources=SourceCache(engine, settings.source_cache_seconds),
            writer=await event_writer(engine, settings.database_url, settings.db_pool_size),
            dispatcher=EventDispatcher(runtime.send_job),
            ping_broker=lambda: ping(runtime.broker),
            rules=runtime.rules,
        )
        await asyncio.to_thread(runtime.rules.reload_if_changed)  # load errors show at start
        embedded = settings.broker_url.startswith("memory://")
        stop = threading.Event()
        if embedded:
            worker = start_worker(runtime, EMBEDDED_WORKER_THREADS)
            scheduler = threading.Thread(
                target=run_scheduler, args=(runtime, stop), name="scheduler", daemon=True
            )
            scheduler.start()
            log.info("embedded mode: worker and scheduler run in this process")
        try:
            yield
        finally:
            await app.state.lifeline.dispatcher.close()
            await app.state.lifeline.writer.close()
            if embedded:
                stop.set()
                worker.stop()
                scheduler.join()
            await engine.dispose()
            runtime.close()

    app = FastAPI(
        title="Lifeline",
        summary="User lifecycle engagement: Segment-compatible events in, EDM, SMS and push out.",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=JSON,
    )
    app.include_router(ingest_router)
    app.include_router(users_router)
    app.include_router(rules_router)
    app.include_router(delivery_router)
    app.include_router(links_router)
    app.include_router(webhooks_router)
    _health_routes(app)
    _error_handlers(app)
    return app


def _health_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="The database and the broker are reachable")
    async def readyz(request: Request) -> JSON:
        state: AppState = request.app.state.lifeline
        checks: dict[str, str] = {}
        try:
            async with state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            log.warning("readiness: database unreachable: %s", type(exc).__name__)
            checks["database"] = "unreachable"
        try:
            await asyncio.to_thread(state.ping_broker)
            checks["broker"] = "ok"
        except Exception as exc:
            log.warning("readiness: broker unreachable: %s", type(exc).__name__)
            checks["broker"] = "unreachable"
        ready = all(v == "ok" for v in checks.values())
        return JSON({"ready": ready, **checks}, status_code=200 if ready else 503)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InvalidRequest)
    async def invalid_request(_request: Request, exc: InvalidRequest) -> JSON:
        return JSON(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSON:
        return JSON(
            {"success": False, "error": exc.detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(OSError)
    async def database_unavailable(_request: Request, exc: Exception) -> JSON:
        # Nothing was stored; Segment's libraries retry a 503.
        log.error("database error: %s", type(exc).__name__)
        return JSON(
            {"success": False, "error": "the database is unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSON:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        return JSON(
            {"success": False, "error": "invalid request", "errors": errors}, status_code=400
        )
