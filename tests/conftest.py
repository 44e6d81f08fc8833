"""Fixtures: every API test runs on the embedded default (SQLite) and on PostgreSQL.

PostgreSQL and Redis tests skip when those services are down, unless
LIFELINE_TEST_SERVICES=required (as in CI), where they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine

import service.models  # noqa: F401  (every table on Base.metadata)
from service.ingest.sources import create_source
from service.kit.db import Base, create_sync_engine, unit_of_work
from service.kit.settings import Settings
from service.models import Event
from workers.api import create_api

PG_ADMIN_URL = os.environ.get("LIFELINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LIFELINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ADMIN_TOKEN = "test-admin-token"
SERVICES_REQUIRED = os.environ.get("LIFELINE_TEST_SERVICES") == "required"

HEAD = ScriptDirectory.from_config(
    AlembicConfig(str(Path(__file__).resolve().parent.parent / "alembic.ini"))
).get_current_head()


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def require_service(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if SERVICES_REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards; yields its URL."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"lifeline_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database with Lifeline's schema, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lifeline.db'}"
        _create_schema(url)
        yield url
        return
    with fresh_postgres_database() as url:
        _create_schema(url)
        yield url


def _create_schema(url: str) -> None:
    """The models' tables, marked as at the latest migration (tests/test_migrations.py proves
    the migrations build the same schema)."""
    engine = create_sync_engine(url)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES (:head)"), {"head": HEAD})
    engine.dispose()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """No rules folder: ingestion and profile tests run without the rule engine. Tests of
    the engine override this fixture with a rules folder of their own."""
    return tmp_path / "no-rules"


@pytest.fixture
def settings(database_url: str, rules_dir: Path, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        outbox_dir=tmp_path / "outbox",
        secret_key="test-secret-key",
        broker_url="memory://",
        admin_token=ADMIN_TOKEN,
        rules_dir=rules_dir,
        scheduler_interval_seconds=0.1,
        sweep_interval_seconds=0.2,
        sweep_grace_seconds=1.0,
        source_cache_seconds=0,
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_sync_engine(settings.database_url)
    yield engine
    engine.dispose()


def new_write_key(engine: Engine, name: str | None = None) -> str:
    with unit_of_work(engine) as uow:
        return create_source(uow.session, name or f"source-{uuid.uuid4().hex[:8]}").write_key


@pytest.fixture
def write_key(engine: Engine) -> str:
    return new_write_key(engine, "web")


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_api(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lifeline.test") as client:
        yield client


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def events(engine: Engine) -> list[Event]:
    with unit_of_work(engine) as uow:
        return list(uow.session.scalars(select(Event).order_by(Event.id)))


async def wait_processed(engine: Engine, count: int, timeout: float = 10.0) -> list[Event]:
    """Wait until `count` events exist and all are processed; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await asyncio.to_thread(events, engine)
        if len(rows) >= count and all(e.processed_at for e in rows):
            return rows
        if time.monotonic() > deadline:
            done = sum(1 for e in rows if e.processed_at)
            raise AssertionError(f"{done}/{len(rows)} events processed, expected {count}")
        await asyncio.sleep(0.05)


class LiveServer:
    """The app served by uvicorn on a free loopback port, in a thread (for real HTTP clients)."""

    def __init__(self, app: FastAPI):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(create_api(settings)) as server:
        yield server
