"""What operators see of messages and how they retry failures, on SQLite and PostgreSQL:
GET /v1/messages with filters and pages, one message with its status history, and
`lifeline messages retry`, after which the embedded scheduler and worker send them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from service.cli import main
from service.kit.settings import get_settings
from tests.helpers.consent import RULES, add_message, add_user, message_row, status_history
from tests.helpers.polling import eventually_async
from tests.helpers.rules import RulePack


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return RulePack(tmp_path / "rules").rules(RULES).write()


@pytest.fixture
def cli_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI reads LIFELINE_DATABASE_URL, like the running service."""
    monkeypatch.setenv("LIFELINE_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


async def get(client: httpx.AsyncClient, admin: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/messages", headers=admin, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def ids(page: dict[str, Any]) -> list[int]:
    return [m["id"] for m in page["messages"]]


async def test_operators_find_messages_by_user_rule_and_status(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    ada = add_user(engine, "ada", email="ada@example.com")
    bob = add_user(engine, "bob", email="bob@example.com")
    a1 = add_message(engine, ada, rule="welcome", status="sent")
    b1 = add_message(engine, bob, rule="welcome", status="failed")
    a2 = add_message(engine, ada, rule="winback", status="failed")
    b2 = add_message(engine, bob, rule="winback", status="skipped")
    a3 = add_message(engine, ada, rule="nudge", status="delivered")

    assert ids(await get(client, admin)) == [a3, b2, a2, b1, a1]  # newest first
    assert ids(await get(client, admin, user="ada")) == [a3, a2, a1]
    assert ids(await get(client, admin, rule="winback")) == [b2, a2]
    assert ids(await get(client, admin, status="failed")) == [a2, b1]
    assert ids(await get(client, admin, user="bob", rule="welcome", status="failed")) == [b1]
    assert ids(await get(client, admin, rule="no-such-rule")) == []

    [row] = (await get(client, admin, user="ada", status="failed"))["messages"]
    assert {k: row[k] for k in ("id", "userId", "rule", "channel", "template", "status")} == {
        "id": a2,
        "userId": "ada",
        "rule": "winback",
        "channel": "email",
        "template": "winback",
        "status": "failed",
    }


async def test_the_message_list_pages_with_a_cursor(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    profile = add_user(engine, "ada", email="ada@example.com")
    made = [add_message(engine, profile, rule="welcome", status="sent") for _ in range(5)]
    add_message(engine, profile, rule="welcome", status="failed")

    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, "status": "sent"}
        if cursor is not None:
            params["cursor"] = cursor
        page = await get(client, admin, **params)
        seen += ids(page)
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    assert pages == 3


async def test_one_message_with_its_status_history(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    profile = add_user(engine, "ada", email="ada@example.com")
    message_id = add_message(
        engine,
        profile,
        rule="welcome",
        status="failed",
        history=(
            ("queued", None),
            ("sending", None),
            ("failed", "local-email (permanent): mailbox rejected"),
        ),
    )

    response = await client.get(f"/v1/messages/{message_id}", headers=admin)

    assert response.status_code == 200, response.text
    found = response.json()
    assert (found["id"], found["userId"], found["status"], found["rule"]) == (
        message_id,
        "ada",
        "failed",
        "welcome",
    )
    assert [(c["status"], c["detail"]) for c in found["history"]] == [
        ("queued", None),
        ("sending", None),
        ("failed", "local-email (permanent): mailbox rejected"),
    ]
    assert all(c["at"] for c in found["history"])


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/messages", {"status": "lost"}, 400),
        ("/v1/messages", {"limit": 0}, 400),
        ("/v1/messages", {"cursor": "abc"}, 400),
        ("/v1/messages", {"user": "nobody"}, 404),
        ("/v1/messages/123456", {}, 404),
        ("/v1/messages/not-a-number", {}, 400),
    ],
)
async def test_bad_message_queries(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    path: str,
    params: dict[str, Any],
    status: int,
) -> None:
    response = await client.get(path, headers=admin, params=params)
    assert response.status_code == status, response.text


async def test_the_messages_api_needs_the_admin_token(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    profile = add_user(engine, "ada", email="ada@example.com")
    message_id = add_message(engine, profile, rule="welcome", status="sent")
    for path in ("/v1/messages", f"/v1/messages/{message_id}"):
        response = await client.get(path)
        assert response.status_code == 401
        assert "ada" not in response.text


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def wait_sent(engine: Engine, message_id: int) -> None:
    """The embedded scheduler's sweep hands a retried message to the worker: polled."""

    def status() -> tuple[str, str | None]:
        row = message_row(engine, message_id)
        return row.status, row.status_reason

    await eventually_async(
        status, until=lambda seen: seen[0] == "sent", what=f"message {message_id} to be sent"
    )


async def test_retried_failures_are_queued_again_and_sent(
    cli_database: str,
    client: httpx.AsyncClient,
    engine: Engine,
    admin: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    profile = add_user(engine, "ada", email="ada@example.com")
    failed_history = (("queued", None), ("sending", None), ("failed", "provider down"))
    welcome = add_message(engine, profile, rule="welcome", status="failed", history=failed_history)
    nudge = add_message(engine, profile, rule="nudge", status="failed", history=failed_history)
    sent = add_message(engine, profile, rule="winback", status="sent")

    code, _, err = run(capsys, "messages", "retry")
    assert code == 2
    assert "--all-failed" in err

    code, out, err = run(capsys, "messages", "retry", "--id", str(sent), "--id", "987654")
    assert code == 1
    assert out.startswith("0 failed messages queued again")
    assert f"message {sent}: sent, not retried" in err
    assert "message 987654: no such message" in err

    code, out, _ = run(capsys, "messages", "retry", "--rule", "welcome")
    assert code == 0
    assert out.startswith("1 failed message queued again")
    await wait_sent(engine, welcome)
    history = status_history(engine, welcome)
    assert history[:4] == [*failed_history, ("queued", "retried by an operator")]
    assert history[-1][0] == "sent"
    assert message_row(engine, welcome).attempts == 1  # a fresh count
    assert message_row(engine, nudge).status == "failed"

    failures = (await client.get("/v1/messages", headers=admin, params={"status": "failed"})).json()
    assert ids(failures) == [nudge]
    code, out, _ = run(capsys, "messages", "retry", "--all-failed")
    assert code == 0
    assert out.startswith("1 failed message queued again")
    await wait_sent(engine, nudge)
    assert message_row(engine, sent).status == "sent"
    assert ids(await get(client, admin, status="failed")) == []
