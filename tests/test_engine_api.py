"""The rule engine behind the API, on SQLite and PostgreSQL: what an operator sees of a user's
stage and decisions, the live rule set and its hot reload, and erased users."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.engine import Engine

from service.engine.index import RuleIndex
from service.engine.loader import load_rules
from service.kit.db import unit_of_work, utcnow
from service.kit.settings import Settings
from service.models import Device, User
from tests.helpers.api import events, get_profile, send
from tests.helpers.engine import db_journeys, db_messages, run_due_journeys
from tests.helpers.rules import RulePack, settled, version_of, write
from tests.helpers.waiting import EmbeddedWorker, wait_processed

RULES = """
rules:
  - id: welcome
    category: activation
    trigger: {event: Signed Up}
    steps:
      - send: {channel: email, template: welcome}
      - wait: 1d
      - send: {channel: push, template: nudge}
"""


@pytest.fixture
def rules_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    broken = getattr(request, "param", None) == "broken"
    rules = RULES.replace("template: welcome", "template: welcom") if broken else RULES
    return RulePack(tmp_path / "rules").rules(rules).write()


async def sign_up(client: httpx.AsyncClient, write_key: str, user_id: str) -> None:
    """identify and track in one request, so one job processes them in order."""
    traits = {"email": f"{user_id}@example.com"}
    batch = [
        {"type": "identify", "userId": user_id, "traits": traits},
        {"type": "track", "userId": user_id, "event": "Signed Up"},
    ]
    await send(client, write_key, "batch", {"batch": batch})


async def decisions(
    client: httpx.AsyncClient, admin: dict[str, str], user_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/users/{user_id}/decisions", headers=admin)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["decisions"]
    return found


async def rules_status(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/v1/admin/rules", headers=admin)
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


async def test_a_users_stage_history_decisions_and_message(
    settings: Settings,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    engine: Engine,
    write_key: str,
    rules_dir: Path,
    embedded: EmbeddedWorker,
) -> None:
    await sign_up(client, write_key, "u-1")
    await send(client, write_key, "track", {"userId": "u-1", "event": "Product Used"})
    await embedded.processed(3)

    profile = await get_profile(client, admin, "u-1")
    assert profile["stage"] == "activated"
    assert [(c["fromStage"], c["toStage"], c["cause"]) for c in profile["stageHistory"]] == [
        (None, "new", "first seen"),
        ("new", "activated", "activation event 'Product Used'"),
    ]

    found = await decisions(client, admin, "u-1")
    version = version_of(load_rules(rules_dir), "welcome")
    assert [(d["outcome"], d["rule"], d["ruleVersion"]) for d in found] == [
        ("queued", "welcome", version),
        ("entered", "welcome", version),
    ]
    assert found[0]["id"] > found[1]["id"]
    assert found[0]["reason"] == "email 'welcome'"

    # The embedded worker sends it through the local provider, into the outbox.
    [message] = await embedded.settled(1)
    assert (message.rule_id, message.channel, message.template, message.status) == (
        "welcome",
        "email",
        "welcome",
        "sent",
    )
    assert [p.name for p in settings.outbox_dir.iterdir()] == [message.provider_message_id]


async def test_a_broken_edit_keeps_the_last_good_rules_live(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    engine: Engine,
    write_key: str,
    rules_dir: Path,
    embedded: EmbeddedWorker,
) -> None:
    live = load_rules(rules_dir)
    status = await rules_status(client, admin)
    assert (status["version"], status["rules"], status["errors"]) == (live.version, 1, [])
    loaded_at = status["loadedAt"]
    assert loaded_at is not None

    write(rules_dir, "rules.yaml", RULES.replace("template: nudge", "template: nudgee"))
    settled(rules_dir / "rules.yaml")
    app.state.rules.reload_if_changed()
    status = await rules_status(client, admin)
    assert (status["version"], status["loadedAt"]) == (live.version, loaded_at)
    [error] = status["errors"]
    assert "rules.yaml:8:" in error and "unknown template 'nudgee'" in error

    await sign_up(client, write_key, "u-1")
    await embedded.processed(2)
    [message] = db_messages(engine)
    assert (message.template, message.rule_version) == ("welcome", version_of(live, "welcome"))

    write(rules_dir, "rules.yaml", RULES.replace("template: nudge", "template: reminder"))
    settled(rules_dir / "rules.yaml")
    app.state.rules.reload_if_changed()
    fixed = load_rules(rules_dir)
    status = await rules_status(client, admin)
    assert (status["version"], status["errors"]) == (fixed.version, [])
    assert status["version"] != live.version


@pytest.mark.parametrize("rules_dir", ["broken"], indirect=True)
async def test_events_wait_unprocessed_until_the_rules_are_fixed(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    engine: Engine,
    write_key: str,
    rules_dir: Path,
) -> None:
    status = await rules_status(client, admin)
    assert status["version"] is None
    assert any("unknown template 'welcom'" in e for e in status["errors"])

    await sign_up(client, write_key, "u-1")
    await asyncio.sleep(1.5)  # the worker has tried, and the sweeper has re-enqueued them
    stored = await asyncio.to_thread(events, engine)
    assert len(stored) == 2
    assert all(e.processed_at is None for e in stored)

    write(rules_dir, "rules.yaml", RULES)
    app.state.rules.reload_if_changed()
    # Retried after a back-off, or sent again by the sweep: polled rather than joined.
    await wait_processed(engine, 2, timeout=15)
    assert [m.template for m in db_messages(engine)] == ["welcome"]
    assert (await get_profile(client, admin, "u-1"))["stage"] == "new"


async def test_an_erased_user_enters_nothing_and_gets_nothing_more(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    engine: Engine,
    write_key: str,
    embedded: EmbeddedWorker,
) -> None:
    await sign_up(client, write_key, "u-1")
    await embedded.processed(2)
    with unit_of_work(engine) as uow:
        profile_id = uow.session.scalar(select(User.id).where(User.user_id == "u-1"))
        assert profile_id is not None
        uow.session.add(
            Device(profile_id=profile_id, platform="ios", token="t", created_at=utcnow())
        )
    assert [m.template for m in db_messages(engine)] == ["welcome"]

    response = await client.delete("/v1/users/u-1", headers=admin)
    assert response.status_code == 200, response.text
    before = len(await decisions(client, admin, "u-1"))
    # The copies of event properties kept for journeys and messages are erased too.
    assert [j.trigger_properties for j in db_journeys(engine)] == [None]
    assert [m.variables for m in db_messages(engine)] == [None]
    with unit_of_work(engine) as uow:
        assert uow.session.scalar(select(Device.id)) is None

    # Its journey's wait runs out: nothing is sent to the erased person (not even by push).
    index = app.state.rules.current()
    assert isinstance(index, RuleIndex)
    await asyncio.to_thread(run_due_journeys, engine, index, utcnow() + dt.timedelta(days=2))
    assert [m.template for m in db_messages(engine)] == ["welcome"]
    assert [j.ended_at is not None for j in db_journeys(engine)] == [True]

    # A new sign-up of the erased id enters no journey.
    await send(client, write_key, "track", {"userId": "u-1", "event": "Signed Up"})
    await embedded.processed(3)
    assert len(db_journeys(engine)) == 1
    since_erased = (await decisions(client, admin, "u-1"))[:-before]
    assert [(d["outcome"], d["reason"]) for d in since_erased] == [("ended", "the user was erased")]
