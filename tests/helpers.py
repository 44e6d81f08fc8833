"""Small helpers shared by the API tests (fixtures stay in conftest.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from service.kit.db import unit_of_work
from service.models import Event, User


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


def count_profiles(engine: Engine, user_id: str) -> int:
    with unit_of_work(engine) as uow:
        query = select(func.count()).select_from(User).where(User.user_id == user_id)
        return int(uow.session.scalar(query) or 0)
