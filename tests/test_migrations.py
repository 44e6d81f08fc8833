"""The real alembic CLI, as CI and an operator run it: the migrations build exactly the models'
schema on each backend, and downgrade all the way back."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

import service.models  # noqa: F401  (every table on Base.metadata)
from service.kit.db import Base, create_sync_engine
from tests.helpers.services import fresh_postgres_database

ALEMBIC = Path(sys.executable).parent / "alembic"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TABLES = set(Base.metadata.tables)  # every table the models define


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lifeline.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


def alembic(database_url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")}
    env["LIFELINE_DATABASE_URL"] = database_url
    done = subprocess.run(
        [str(ALEMBIC), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    command = " ".join(args)
    assert done.returncode == 0, f"alembic {command} exited {done.returncode}:\n{done.stderr}"
    return done.stdout + done.stderr


def tables(database_url: str) -> set[str]:
    engine = create_sync_engine(database_url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_head_matches_the_models_and_downgrades_to_nothing(empty_database: str) -> None:
    alembic(empty_database, "upgrade", "head")
    assert tables(empty_database) == {*TABLES, "alembic_version"}

    assert "No new upgrade operations detected" in alembic(empty_database, "check")
    assert "(head)" in alembic(empty_database, "current")

    alembic(empty_database, "downgrade", "base")
    assert tables(empty_database) == {"alembic_version"}

    alembic(empty_database, "upgrade", "head")  # and back up again, from nothing
    assert tables(empty_database) >= TABLES
