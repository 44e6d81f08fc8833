"""The API as the tests use it: requests with a write key or the admin token, the app served
on a real port, and readers of the events and profiles it stored."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import uuid
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from service.ingest.sources import create_source
from service.kit.db import unit_of_work
from service.models import Event, User
from tests.helpers.polling import eventually

ADMIN_TOKEN = "test-admin-token"  # the `settings` fixture's admin_token


def at(minute: int, day: int = 1) -> str:
    """An RFC 3339 UTC time on 2024-03-`day` at 10:`minute`."""
    return f"2024-03-{day:02d}T10:{minute:02d}:00Z"


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def send(
    client: httpx.AsyncClient, write_key: str, path: str, body: dict[str, Any]
) -> httpx.Response:
    response = await client.post(f"/v1/{path}", auth=(write_key, ""), json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    return response


async def get_profile(
    client: httpx.AsyncClient, admin: dict[str, str], user_id: str
) -> dict[str, Any]:
    response = await client.get(f"/v1/users/{user_id}", headers=admin)
    assert response.status_code == 200, response.text
    profile: dict[str, Any] = response.json()
    return profile


async def full_timeline(
    client: httpx.AsyncClient, admin: dict[str, str], user_id: str, limit: int = 500
) -> list[dict[str, Any]]:
    """Every event of the user's timeline, walking all pages."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get(f"/v1/users/{user_id}/events", headers=admin, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["events"])
        cursor = page["nextCursor"]
        if cursor is None:
            return found


def count_events(engine: Engine) -> int:
    with unit_of_work(engine) as uow:
        return int(uow.session.scalar(select(func.count()).select_from(Event)) or 0)


def stored_and_processed(engine: Engine) -> tuple[int, int]:
    """(events stored, events processed)."""
    with unit_of_work(engine) as uow:
        query = select(func.count(), func.count(Event.processed_at)).select_from(Event)
        stored, processed = uow.session.execute(query).one()
        return int(stored), int(processed)


def count_profiles(engine: Engine, user_id: str) -> int:
    with unit_of_work(engine) as uow:
        query = select(func.count()).select_from(User).where(User.user_id == user_id)
        return int(uow.session.scalar(query) or 0)


def new_write_key(engine: Engine, name: str | None = None) -> str:
    with unit_of_work(engine) as uow:
        return create_source(uow.session, name or f"source-{uuid.uuid4().hex[:8]}").write_key


def events(engine: Engine) -> list[Event]:
    with unit_of_work(engine) as uow:
        return list(uow.session.scalars(select(Event).order_by(Event.id)))


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
        eventually(lambda: self.server.started, interval=0.02, what="uvicorn to start")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
