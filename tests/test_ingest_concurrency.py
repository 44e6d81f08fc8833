"""Concurrent requests: on PostgreSQL their rows are written together (group commit); every
request still gets its answer after its own rows are committed, and a messageId sent by two
requests at once is stored and processed once."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy.engine import Engine

from tests.helpers.api import events
from tests.helpers.waiting import EmbeddedWorker


async def test_concurrent_requests_each_store_their_events_once(
    client: httpx.AsyncClient, write_key: str, engine: Engine, embedded: EmbeddedWorker
) -> None:
    async def track(n: int) -> httpx.Response:
        body = {"userId": f"u-{n % 7}", "event": "Product Viewed", "messageId": f"m-{n % 40}"}
        return await client.post("/v1/track", auth=(write_key, ""), json=body)

    responses = await asyncio.gather(*(track(n) for n in range(120)))

    assert {r.status_code for r in responses} == {200}
    stored = await embedded.processed(40)
    assert sorted(e.message_id for e in stored) == sorted(f"m-{n}" for n in range(40))
    await asyncio.sleep(0.5)  # a duplicate would be processed (or stored) by now
    assert len(events(engine)) == 40
