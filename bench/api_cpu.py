"""API CPU per request: POST /v1/track through the production app, in this process.

bench/ingest.py measures the whole machine (load generator, PostgreSQL's commits, a worker),
whose noise on two cores is larger than a change to the API's own code. This measures only
what the API process spends per request: the app is built as `lifeline api` builds it (from
LIFELINE_* settings, with its garbage-collector set-up), requests are handed to it as ASGI
calls, 32 at a time, and the process's CPU time is divided by the number of requests. The
events are really written to PostgreSQL and their ids sent to Redis.

    .venv/bin/python bench/api_cpu.py [--requests 4000] [--runs 3]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres; creates and drops its own database) and
Redis on 127.0.0.1:6379 (uses and empties database 14).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import time
import uuid
from typing import Any

import orjson
import redis
from sqlalchemy import create_engine, text

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/14"
CONCURRENCY = 32


def asgi_call(app: Any, auth: bytes, body: bytes) -> Any:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/track",
        "raw_path": b"/v1/track",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", auth),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def call() -> None:
        delivered = False
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect while the response is written
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status != [200]:
            raise RuntimeError(f"POST /v1/track answered {status}")

    return call()


async def measure(app: Any, auth: bytes, requests: int, runs: int) -> list[float]:
    """CPU microseconds per request, one figure per run."""
    counter = iter(range(10**9))

    def body() -> bytes:
        n = next(counter)
        return orjson.dumps(
            {"userId": f"u-{n % 5000}", "event": "Product Used", "properties": {"n": n}}
        )

    limit = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with limit:
            await asgi_call(app, auth, body())

    async with app.router.lifespan_context(app):
        await asyncio.gather(*(one() for _ in range(300)))  # warm-up
        figures = []
        for _ in range(runs):
            started = time.process_time()
            await asyncio.gather(*(one() for _ in range(requests)))
            figures.append((time.process_time() - started) / requests * 1e6)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    name = f"lifeline_api_cpu_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG.replace('postgresql://', 'postgresql+psycopg://')}/test")
    admin = admin.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    os.environ.update(
        LIFELINE_DATABASE_URL=f"{PG}/{name}",
        LIFELINE_BROKER_URL=REDIS_URL,
        LIFELINE_SECRET_KEY="bench",
        LIFELINE_RULES_DIR="/nonexistent",
        LIFELINE_LOG_LEVEL="WARNING",
    )
    try:
        from service.cli import migrate_database
        from service.ingest.sources import create_source
        from service.kit.db import create_sync_engine, unit_of_work
        from service.kit.settings import get_settings
        from workers.api import create_api

        migrate_database(get_settings())
        engine = create_sync_engine(get_settings().database_url)
        with unit_of_work(engine) as uow:
            key = create_source(uow.session, "bench").write_key
        engine.dispose()
        auth = b"Basic " + base64.b64encode(f"{key}:".encode())
        figures = asyncio.run(measure(create_api(), auth, args.requests, args.runs))
    finally:
        redis.Redis.from_url(REDIS_URL).flushdb()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    shown = ", ".join(f"{f:.0f}" for f in figures)
    print(
        f"POST /v1/track, {args.requests} requests x {args.runs} runs, {CONCURRENCY} at a time: "
        f"{statistics.median(figures):.0f} us of API CPU per request (runs: {shown})"
    )


if __name__ == "__main__":
    main()
