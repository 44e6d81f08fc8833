"""Writing accepted events: INSERT ... ON CONFLICT DO NOTHING, committed before the answer.

One statement is one atomic, committed transaction. On PostgreSQL the statement goes
straight to asyncpg and carries the rows of every request waiting at that moment (see
docs/adr/0003): SQLAlchemy's per-statement overhead, and a round trip and WAL flush per
request, cost more than everything else the hot path does. Other databases (the SQLite
embedded default) use SQLAlchemy Core, one statement per request.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import asyncpg
import orjson
from sqlalchemy import column
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.kit.db import insert_ignoring_conflicts
from service.models import Event

# Every column an accepted event is written with, and its PostgreSQL array type for unnest().
COLUMNS: dict[str, str] = {
    "source_id": "int[]",
    "message_id": "text[]",
    "type": "text[]",
    "name": "text[]",
    "user_id": "text[]",
    "anonymous_id": "text[]",
    "previous_id": "text[]",
    "group_id": "text[]",
    "properties": "jsonb[]",
    "traits": "jsonb[]",
    "context": "jsonb[]",
    "integrations": "jsonb[]",
    "original_timestamp": "timestamptz[]",
    "sent_at": "timestamptz[]",
    "timestamp": "timestamptz[]",
    "received_at": "timestamptz[]",
    "enqueued_at": "timestamptz[]",
}
JSON_COLUMNS = {name for name, kind in COLUMNS.items() if kind == "jsonb[]"}


class EventWriter(Protocol):
    async def insert(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert the rows not already stored (by source and messageId); return new ids."""
        ...

    async def close(self) -> None: ...


class SqlAlchemyEventWriter:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.statement = insert_ignoring_conflicts(
            Event.__table__, engine.dialect.name, ["source_id", "message_id"]
        ).returning(column("id"))

    async def insert(self, rows: list[dict[str, Any]]) -> list[int]:
        if not rows:
            return []
        async with self.engine.begin() as conn:
            result = await conn.execute(self.statement, rows)
            return list(result.scalars())

    async def close(self) -> None:
        pass


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


_NAMES = ", ".join(f'"{name}"' for name in COLUMNS)
_ARRAYS = ", ".join(f"${i}::{kind}" for i, kind in enumerate(COLUMNS.values(), start=1))


class PostgresEventWriter:
    """Rows of concurrent requests are written together (group commit): while one INSERT is
    on its way, the rows of requests arriving meanwhile wait and then go in the next one.
    Each request still gets its answer only after its rows are committed; under load, one
    round trip and one WAL flush serve many requests instead of one each."""

    # One statement for any number of rows: each column travels as one array parameter.
    # Built from the constant COLUMNS only; every value is a bound parameter.
    SQL = (
        f"INSERT INTO events ({_NAMES}) SELECT * FROM unnest({_ARRAYS}) "  # noqa: S608
        "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING id, source_id, message_id"
    )
    MAX_ROWS = 5000  # per statement
    IN_FLIGHT = 4  # statements under way at once

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self._waiting: list[tuple[list[dict[str, Any]], asyncio.Future[list[int]]]] = []
        self._slots = asyncio.Semaphore(self.IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(cls, database_url: str, pool_size: int) -> PostgresEventWriter:
        dsn = make_url(database_url).set(drivername="postgresql")
        pool = await asyncpg.create_pool(
            dsn.render_as_string(hide_password=False), min_size=1, max_size=pool_size
        )
        return cls(pool)

    async def insert(self, rows: list[dict[str, Any]]) -> list[int]:
        if not rows:
            return []
        done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._waiting.append((rows, done))
        task = asyncio.create_task(self._write_waiting())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await done

    async def _write_waiting(self) -> None:
        async with self._slots:
            batch, count = [], 0
            while self._waiting and count < self.MAX_ROWS:
                rows, done = self._waiting.pop(0)
                batch.append((rows, done))
                count += len(rows)
            if not batch:
                return  # an earlier writer took these rows along
            try:
                new = await self._insert([row for rows, _ in batch for row in rows])
            except Exception as exc:
                if len(batch) == 1:
                    batch[0][1].set_exception(exc)
                    return
                # One request's rows may be what the database refused: write each request on
                # its own, so only that request fails.
                for rows, done in batch:
                    try:
                        done.set_result(list((await self._insert(rows)).values()))
                    except Exception as exc:
                        done.set_exception(exc)
                return
            for rows, done in batch:
                # A messageId repeated across the batch is new for the first request only.
                ids = [new.pop(key) for key in _keys(rows) if key in new]
                done.set_result(ids)

    async def _insert(self, rows: list[dict[str, Any]]) -> dict[tuple[int, str], int]:
        columns = [
            [_json(row[name]) for row in rows]
            if name in JSON_COLUMNS
            else [row[name] for row in rows]
            for name in COLUMNS
        ]
        records = await self.pool.fetch(self.SQL, *columns)
        return {(r["source_id"], r["message_id"]): r["id"] for r in records}

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pool.close()


def _keys(rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(row["source_id"], row["message_id"]) for row in rows]


async def event_writer(engine: AsyncEngine, database_url: str, pool_size: int) -> EventWriter:
    if engine.dialect.name == "postgresql":
        return await PostgresEventWriter.connect(database_url, pool_size)
    return SqlAlchemyEventWriter(engine)
