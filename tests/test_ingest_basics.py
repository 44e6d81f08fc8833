from __future__ import annotations

import httpx
from sqlalchemy.engine import Engine

from tests.helpers.api import events
from tests.helpers.waiting import EmbeddedWorker


async def test_track_is_stored_and_processed(
    client: httpx.AsyncClient, write_key: str, embedded: EmbeddedWorker
) -> None:
    response = await client.post(
        "/v1/track",
        auth=(write_key, ""),
        json={"userId": "u1", "event": "Signed Up", "properties": {"plan": "pro"}},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    [event] = await embedded.processed(1)
    assert (event.type, event.name, event.user_id) == ("track", "Signed Up", "u1")
    assert event.properties == {"plan": "pro"}
    assert event.profile_id is not None


async def test_missing_key_is_401_and_stores_nothing(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    response = await client.post("/v1/track", json={"userId": "u1", "event": "x"})
    assert response.status_code == 401
    assert events(engine) == []
