"""The real services the tests use: PostgreSQL databases made per test, and whether a service
is reachable at all.

PostgreSQL and Redis tests skip when those services are down, unless
LIFELINE_TEST_SERVICES=required (as in CI), where they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

import service.models  # noqa: F401  (every table on Base.metadata)
from service.kit.db import Base, create_sync_engine

PG_ADMIN_URL = os.environ.get("LIFELINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LIFELINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
SERVICES_REQUIRED = os.environ.get("LIFELINE_TEST_SERVICES") == "required"

HEAD = ScriptDirectory.from_config(
    AlembicConfig(str(Path(__file__).resolve().parents[2] / "alembic.ini"))
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


def create_schema(url: str) -> None:
    """The models' tables, marked as at the latest migration (tests/test_migrations.py proves
    the migrations build the same schema)."""
    engine = create_sync_engine(url)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES (:head)"), {"head": HEAD})
    engine.dispose()
