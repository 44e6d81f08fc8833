"""Writing accepted events: a single INSERT ... ON CONFLICT DO NOTHING per request.

One statement is one atomic, committed transaction, so a request costs one round trip. On
PostgreSQL the statement goes straight to asyncpg (see docs/adr/0003): SQLAlchemy's
per-statement overhead was larger than everything else the hot path does. Other databases
(the SQLite embedded default) use SQLAlchemy Core.
"""

from __future__ import annotations

from typing import Any, Protocol

import asyncpg
import orjson
from sqlalchemy import column
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ingest.models import Event
from service.kit.db import insert_ignoring_conflicts

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
    # One statement for any number of rows: each column travels as one array parameter.
    # Built from the constant COLUMNS only; every value is a bound parameter.
    SQL = (
        f"INSERT INTO events ({_NAMES}) SELECT * FROM unnest({_ARRAYS}) "  # noqa: S608
        "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING id"
    )

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

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
        columns = [
            [_json(row[name]) for row in rows]
            if name in JSON_COLUMNS
            else [row[name] for row in rows]
            for name in COLUMNS
        ]
        records = await self.pool.fetch(self.SQL, *columns)
        return [record[0] for record in records]

    async def close(self) -> None:
        await self.pool.close()


async def event_writer(engine: AsyncEngine, database_url: str, pool_size: int) -> EventWriter:
    if engine.dialect.name == "postgresql":
        return await PostgresEventWriter.connect(database_url, pool_size)
    return SqlAlchemyEventWriter(engine)
