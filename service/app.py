"""The FastAPI application.

The process that serves it (workers.api) hands it its plumbing: how to enqueue jobs, how to
check the broker, the rule registry, and any background work to run beside it (the worker and
scheduler threads of the embedded default). So the service never imports the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.delivery.deps import WebhookReceivers
from service.delivery.endpoints import consent, links, messages
from service.delivery.webhooks import router as webhooks_router
from service.engine.endpoints import router as rules_router
from service.engine.registry import RuleRegistry
from service.ingest.deps import Ingestion
from service.ingest.dispatch import EventDispatcher
from service.ingest.endpoints import router as ingest_router
from service.ingest.schemas import InvalidRequest
from service.ingest.sources import SourceCache
from service.ingest.writer import event_writer
from service.kit.db import JobSender, create_async_db_engine
from service.kit.deps import DatabaseEngine
from service.kit.http import JSON
from service.kit.settings import Settings
from service.processing.endpoints import router as erasure_router
from service.users.endpoints import router as users_router

log = logging.getLogger(__name__)


def _nothing() -> None:
    pass


@dataclass
class Plumbing:
    """What the process serving the API gives it when the app starts (per uvicorn worker)."""

    send_job: JobSender
    ping_broker: Callable[[], None]
    rules: RuleRegistry
    start: Callable[[], None] = _nothing  # background work beside the API, once rules are read
    stop: Callable[[], None] = _nothing  # stops that work and closes the broker


def create_app(settings: Settings, plumbing: Callable[[Settings], Plumbing]) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pipes = plumbing(settings)
        engine = create_async_db_engine(settings.database_url, settings.db_pool_size)
        # What the endpoints' dependencies read (service.kit.deps and each domain's deps.py).
        app.state.settings = settings
        app.state.engine = engine
        app.state.send_job = pipes.send_job
        app.state.ping_broker = pipes.ping_broker
        app.state.ingestion = Ingestion(
            SourceCache(engine, settings.source_cache_seconds),
            await event_writer(engine, settings.database_url, settings.db_pool_size),
            EventDispatcher(pipes.send_job),
        )
        app.state.rules = pipes.rules
        app.state.webhook_receivers = WebhookReceivers(settings)
        await asyncio.to_thread(pipes.rules.reload_if_changed)  # load errors show at start
        pipes.start()
        try:
            yield
        finally:
            await app.state.ingestion.close()
            pipes.stop()
            await engine.dispose()

    app = FastAPI(
        title="Lifeline",
        summary="User lifecycle engagement: Segment-compatible events in, EDM, SMS and push out.",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=JSON,
    )
    app.include_router(ingest_router)
    app.include_router(users_router)
    app.include_router(erasure_router)
    app.include_router(rules_router)
    app.include_router(consent.router)
    app.include_router(messages.router)
    app.include_router(links.router)
    app.include_router(webhooks_router)
    _health_routes(app)
    _error_handlers(app)
    return app


def _health_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="The database and the broker are reachable")
    async def readyz(request: Request, engine: DatabaseEngine) -> JSON:
        checks: dict[str, str] = {}
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            log.warning("readiness: database unreachable: %s", type(exc).__name__)
            checks["database"] = "unreachable"
        try:
            await asyncio.to_thread(request.app.state.ping_broker)
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
