"""Fixtures: every API test runs on the embedded default (SQLite) and on PostgreSQL.

PostgreSQL and Redis tests skip when those services are down, unless
LIFELINE_TEST_SERVICES=required (as in CI), where they fail instead. Helpers that are not
fixtures live in tests/helpers/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dramatiq
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine

import workers.api
from service.kit.db import create_sync_engine
from service.kit.settings import Settings
from tests.helpers.api import ADMIN_TOKEN, LiveServer, new_write_key
from tests.helpers.deployment import BrokerRedis, Processes, broker_redis_in
from tests.helpers.services import create_schema, fresh_postgres_database
from tests.helpers.waiting import EmbeddedWorker
from workers.api import create_api
from workers.runtime import Runtime
from workers.worker import start_worker


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database with Lifeline's schema, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lifeline.db'}"
        create_schema(url)
        yield url
        return
    with fresh_postgres_database() as url:
        create_schema(url)
        yield url


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


@pytest.fixture
def write_key(engine: Engine) -> str:
    return new_write_key(engine, "web")


@pytest.fixture
def embedded_workers(monkeypatch: pytest.MonkeyPatch) -> list[dramatiq.Worker]:
    """The workers that workers.api starts beside an app on the in-process broker, kept so
    that tests can join them (workers.api holds on to them itself; the function it starts
    them with is the one place to see them from outside)."""
    started: list[dramatiq.Worker] = []

    def start_and_keep(runtime: Runtime, threads: int) -> dramatiq.Worker:
        worker = start_worker(runtime, threads)
        started.append(worker)
        return worker

    monkeypatch.setattr(workers.api, "start_worker", start_and_keep)
    return started


@pytest.fixture
async def app(
    settings: Settings, embedded_workers: list[dramatiq.Worker]
) -> AsyncIterator[FastAPI]:
    app = create_api(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def embedded(
    app: FastAPI, embedded_workers: list[dramatiq.Worker], engine: Engine
) -> EmbeddedWorker:
    """The app's embedded worker: `await embedded.join()` waits for the jobs handed to it."""
    [worker] = embedded_workers
    return EmbeddedWorker(worker, app.state.ingestion.dispatcher, engine)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lifeline.test") as client:
        yield client


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(create_api(settings)) as server:
        yield server


# --- Real processes (tests/test_e2e_processes.py, tests/test_delivery_faults.py) -------------


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path / "logs")
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def broker_redis(tmp_path: Path) -> Iterator[BrokerRedis]:
    with broker_redis_in(tmp_path) as broker:
        yield broker
