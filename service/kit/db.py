"""Database plumbing: metadata, column types, engines and the transaction boundary.

Application code never calls commit(): a unit of work commits once at its boundary (an API
request, an actor run, a CLI command) and only then hands its queued jobs to the broker, so a
worker never looks for a row that is not committed yet.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, create_engine, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")

# Row ids: SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- URLs and engines ---------------------------------------------------------------------


def sync_url(url: str) -> str:
    """The URL for the synchronous driver (workers, scheduler, CLI, migrations)."""
    u = make_url(url)
    if u.get_backend_name() == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    elif u.get_backend_name() == "sqlite":
        u = u.set(drivername="sqlite")
    return u.render_as_string(hide_password=False)


def async_url(url: str) -> str:
    """The URL for the asyncio driver (the API)."""
    u = make_url(url)
    if u.get_backend_name() == "postgresql":
        u = u.set(drivername="postgresql+asyncpg")
    elif u.get_backend_name() == "sqlite":
        u = u.set(drivername="sqlite+aiosqlite")
    return u.render_as_string(hide_password=False)


def _tune_sqlite(engine: Engine) -> None:
    """WAL lets the API read while a worker writes; the busy timeout queues writers."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def create_sync_engine(url: str, pool_size: int = 10) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(sync_url(url))
        _tune_sqlite(engine)
        return engine
    return create_engine(
        sync_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def create_async_db_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_async_engine(async_url(url))
        _tune_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(
        async_url(url), pool_size=pool_size, max_overflow=pool_size, pool_recycle=600
    )


# --- Units of work --------------------------------------------------------------------------


class JobSender(Protocol):
    """Hands a job to the broker by actor name; must not raise (the sweeper recovers losses)."""

    def __call__(self, actor_name: str, *args: Any) -> None: ...


JOBS = "lifeline.jobs"


BATCHED = "lifeline.batched-jobs"
JOB_BATCH_SIZE = 100


def enqueue_after_commit(session: Session | AsyncSession, actor_name: str, *args: Any) -> None:
    """Hand a job to the broker once the session's transaction has committed."""
    session.info.setdefault(JOBS, []).append((actor_name, args))


def enqueue_id_after_commit(session: Session | AsyncSession, actor_name: str, row_id: int) -> None:
    """Hand `row_id` to an actor that takes a list of ids, once the transaction has committed;
    the ids of one transaction travel together, up to JOB_BATCH_SIZE per job."""
    session.info.setdefault(BATCHED, {}).setdefault(actor_name, []).append(row_id)


def _pending_jobs(session: Session | AsyncSession) -> list[tuple[str, tuple[Any, ...]]]:
    jobs: list[tuple[str, tuple[Any, ...]]] = session.info.pop(JOBS, [])
    for actor_name, ids in session.info.pop(BATCHED, {}).items():
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), JOB_BATCH_SIZE):
            jobs.append((actor_name, (unique[start : start + JOB_BATCH_SIZE],)))
    return jobs


@dataclass
class UnitOfWork:
    """One transaction; the jobs enqueued on its session go to the broker after it commits."""

    session: Any

    def enqueue(self, actor_name: str, *args: Any) -> None:
        enqueue_after_commit(self.session, actor_name, *args)


@dataclass
class SyncUnitOfWork(UnitOfWork):
    session: Session


@dataclass
class AsyncUnitOfWork(UnitOfWork):
    session: AsyncSession


# --- Rows written when the transaction commits ------------------------------------------------

AT_COMMIT = "lifeline.insert-at-commit"


def insert_at_commit(session: Session, table: Any, row: dict[str, Any]) -> None:
    """Insert `row` into `table` just before the transaction commits, with the other rows for
    that table in one statement. For append-only records nothing in the same transaction
    reads back (decisions, status history): one statement per transaction instead of one per
    row."""
    session.info.setdefault(AT_COMMIT, {}).setdefault(table, []).append(row)


@event.listens_for(Session, "before_commit")
def _insert_pending_rows(session: Session) -> None:
    for table, rows in session.info.pop(AT_COMMIT, {}).items():
        session.execute(table.insert(), rows)


@event.listens_for(Session, "after_rollback")
def _drop_pending_rows(session: Session) -> None:
    session.info.pop(AT_COMMIT, None)


@contextlib.contextmanager
def unit_of_work(engine: Engine, send_job: JobSender | None = None) -> Iterator[SyncUnitOfWork]:
    """`send_job` None: no broker here (simulations, tests). The work stays durable in the
    database, and the scheduler picks it up."""
    with Session(engine, expire_on_commit=False) as session:
        uow = SyncUnitOfWork(session)
        with session.begin():
            yield uow
        _send_jobs(_pending_jobs(session), send_job)


# How a job's process hands the service its transactions: each call opens one unit of work
# (service functions that span several transactions, such as sending a group of messages,
# take one of these instead of an engine).
Transaction = Callable[[], contextlib.AbstractContextManager[SyncUnitOfWork]]


@contextlib.asynccontextmanager
async def async_unit_of_work(
    engine: AsyncEngine, send_job: JobSender | None = None
) -> AsyncIterator[AsyncUnitOfWork]:
    async with AsyncSession(engine, expire_on_commit=False) as session:
        uow = AsyncUnitOfWork(session)
        async with session.begin():
            yield uow
        # A broker call: brief, and it never raises (see JobSender).
        _send_jobs(_pending_jobs(session), send_job)


def _send_jobs(jobs: list[tuple[str, tuple[Any, ...]]], send_job: JobSender | None) -> None:
    if send_job is None:
        return
    for actor_name, args in jobs:
        send_job(actor_name, *args)


def insert_ignoring_conflicts(table: Any, dialect_name: str, conflict_columns: list[str]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING, on PostgreSQL and SQLite alike."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
    if dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
    raise RuntimeError(f"unsupported database: {dialect_name}")
