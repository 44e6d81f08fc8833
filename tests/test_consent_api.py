"""The admin API for subscriptions and the suppression list, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from tests.helpers.api import send
from tests.helpers.consent import add_user, subscriptions, suppressions
from tests.helpers.waiting import EmbeddedWorker


async def subscribe(
    client: httpx.AsyncClient, admin: dict[str, str], user_id: str, **body: Any
) -> httpx.Response:
    return await client.post(f"/v1/users/{user_id}/subscriptions", headers=admin, json=body)


async def test_a_backend_records_subscription_changes(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    profile = add_user(engine, "u-1", email="Ada@Example.com")

    response = await subscribe(
        client, admin, "u-1", channel="email", topic="recall", subscribed=False
    )
    assert response.status_code == 200, response.text
    state = response.json()
    assert state["userId"] == "u-1"
    [row] = state["subscriptions"]
    assert (row["channel"], row["topic"], row["subscribed"], row["source"]) == (
        "email",
        "recall",
        False,
        "api",
    )
    assert row["updatedAt"]
    assert state["suppressions"] == []

    response = await subscribe(
        client, admin, "u-1", channel="email", topic="*", subscribed=False, source="app-settings"
    )
    assert response.status_code == 200, response.text
    assert [(s["topic"], s["source"]) for s in response.json()["subscriptions"]] == [
        ("*", "app-settings"),
        ("recall", "api"),
    ]
    # Leaving the whole channel puts the address on the suppression list ...
    assert [(s["address"], s["reason"]) for s in response.json()["suppressions"]] == [
        ("ada@example.com", "unsubscribe")
    ]

    # ... and joining again takes it off.
    response = await subscribe(client, admin, "u-1", channel="email", topic="*", subscribed=True)
    assert response.status_code == 200, response.text
    assert response.json()["suppressions"] == []
    assert subscriptions(engine) == [
        (profile, "email", "*", True, "api"),
        (profile, "email", "recall", False, "api"),
    ]

    read = await client.get("/v1/users/u-1/subscriptions", headers=admin)
    assert read.status_code == 200
    assert read.json() == response.json()


@pytest.mark.parametrize(
    "body",
    [
        {"channel": "fax", "topic": "recall", "subscribed": False},
        {"channel": "email", "topic": "newsletter", "subscribed": False},
        {"channel": "email", "topic": "recall", "subscribed": "no"},
        {"channel": "email", "topic": "recall"},
        {"channel": "email", "topic": "recall", "subscribed": False, "source": ""},
        {"channel": "email", "topic": "recall", "subscribed": False, "extra": 1},
    ],
)
async def test_bad_subscription_changes_are_refused(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str], body: dict[str, Any]
) -> None:
    add_user(engine, "u-1", email="ada@example.com")
    response = await subscribe(client, admin, "u-1", **body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid request"
    assert subscriptions(engine) == []


async def test_subscriptions_of_an_unknown_user_and_without_the_admin_token(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    body = {"channel": "email", "topic": "recall", "subscribed": False}
    assert (await subscribe(client, admin, "nobody", **body)).status_code == 404
    assert (await client.get("/v1/users/nobody/subscriptions", headers=admin)).status_code == 404

    add_user(engine, "u-1", email="ada@example.com")
    refused = await client.post("/v1/users/u-1/subscriptions", json=body)
    assert refused.status_code == 401
    assert (await client.get("/v1/users/u-1/subscriptions")).status_code == 401
    assert subscriptions(engine) == []


async def suppress(client: httpx.AsyncClient, admin: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post("/v1/suppressions", headers=admin, json=body)


async def test_operators_manage_the_suppression_list(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    added = await suppress(client, admin, channel="email", address=" Ada@Example.COM ")
    assert added.status_code == 201, added.text
    assert {k: added.json()[k] for k in ("channel", "address", "reason")} == {
        "channel": "email",
        "address": "ada@example.com",
        "reason": "admin",
    }
    phone = await suppress(
        client, admin, channel="sms", address="+1 415 555 0100", reason="complaint"
    )
    assert phone.status_code == 201, phone.text
    assert phone.json()["address"] == "+14155550100"

    # The same address again keeps its one entry.
    again = await suppress(client, admin, channel="email", address="ada@example.com")
    assert again.status_code == 200
    assert suppressions(engine) == [
        ("email", "ada@example.com", "admin"),
        ("sms", "+14155550100", "complaint"),
    ]

    everything = await client.get("/v1/suppressions", headers=admin)
    assert [s["address"] for s in everything.json()["suppressions"]] == [
        "+14155550100",
        "ada@example.com",
    ]
    one = await client.get(
        "/v1/suppressions", headers=admin, params={"channel": "email", "address": "ADA@example.com"}
    )
    assert [s["address"] for s in one.json()["suppressions"]] == ["ada@example.com"]
    sms = await client.get("/v1/suppressions", headers=admin, params={"channel": "sms"})
    assert [s["reason"] for s in sms.json()["suppressions"]] == ["complaint"]

    removed = await client.delete("/v1/suppressions/email/Ada@Example.com", headers=admin)
    assert removed.status_code == 204
    assert suppressions(engine) == [("sms", "+14155550100", "complaint")]
    gone = await client.delete("/v1/suppressions/email/ada@example.com", headers=admin)
    assert gone.status_code == 404
    removed = await client.delete("/v1/suppressions/sms/+14155550100", headers=admin)
    assert removed.status_code == 204
    assert suppressions(engine) == []


async def test_an_unsubscribe_entry_becomes_an_operators_block_not_the_reverse(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    """An operator's block also stops transactional messages; a later unsubscribe must not
    weaken it, and an operator must be able to strengthen an unsubscribe."""
    await suppress(client, admin, channel="email", address="a@example.com", reason="unsubscribe")
    await suppress(client, admin, channel="email", address="a@example.com")
    await suppress(client, admin, channel="email", address="b@example.com", reason="hard_bounce")
    await suppress(client, admin, channel="email", address="b@example.com", reason="unsubscribe")
    assert suppressions(engine) == [
        ("email", "a@example.com", "admin"),
        ("email", "b@example.com", "hard_bounce"),
    ]


async def test_the_suppression_list_pages_newest_first(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    for n in range(5):
        response = await suppress(client, admin, channel="email", address=f"p{n}@example.com")
        assert response.status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/suppressions", headers=admin, params=params)).json()
        seen += [s["address"] for s in page["suppressions"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"p{n}@example.com" for n in reversed(range(5))]


@pytest.mark.parametrize(
    ("method", "path", "body", "params"),
    [
        ("POST", "/v1/suppressions", {"channel": "email", "address": "not-an-email"}, None),
        ("POST", "/v1/suppressions", {"channel": "sms", "address": "0415 555 0100"}, None),
        ("POST", "/v1/suppressions", {"channel": "push", "address": "device-token"}, None),
        (
            "POST",
            "/v1/suppressions",
            {"channel": "email", "address": "a@b.co", "reason": "x"},
            None,
        ),
        ("GET", "/v1/suppressions", None, {"address": "a@example.com"}),
        ("GET", "/v1/suppressions", None, {"channel": "fax"}),
        ("GET", "/v1/suppressions", None, {"cursor": "²"}),
        ("DELETE", "/v1/suppressions/email/not-an-email", None, None),
        ("DELETE", "/v1/suppressions/push/a@example.com", None, None),
    ],
)
async def test_bad_suppression_requests_are_refused(
    client: httpx.AsyncClient,
    engine: Engine,
    admin: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    params: dict[str, Any] | None,
) -> None:
    response = await client.request(method, path, headers=admin, json=body, params=params)
    assert response.status_code == 400, response.text
    assert suppressions(engine) == []


async def test_the_suppression_list_needs_the_admin_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/suppressions")).status_code == 401
    body = {"channel": "email", "address": "a@example.com"}
    assert (await client.post("/v1/suppressions", json=body)).status_code == 401
    assert (await client.delete("/v1/suppressions/email/a@example.com")).status_code == 401


async def test_erasing_a_person_takes_their_addresses_off_the_list(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    """The erasure tombstone (a hash) keeps stopping messages; the list must not keep the
    address in clear."""
    add_user(engine, "u-1", email="Ada@Example.com", phone="+14155550100")
    await subscribe(client, admin, "u-1", channel="email", topic="*", subscribed=False)
    await suppress(client, admin, channel="sms", address="+14155550100", reason="complaint")
    await suppress(client, admin, channel="email", address="someone-else@example.com")
    assert len(suppressions(engine)) == 3

    erased = await client.delete("/v1/users/u-1", headers=admin)
    assert erased.status_code == 200, erased.text
    assert suppressions(engine) == [("email", "someone-else@example.com", "admin")]


async def test_a_profile_merge_keeps_the_later_of_two_conflicting_choices(
    client: httpx.AsyncClient,
    engine: Engine,
    admin: dict[str, str],
    write_key: str,
    embedded: EmbeddedWorker,
) -> None:
    for user_id in ("guest-1", "member-1"):
        identify = {"userId": user_id, "traits": {"email": f"{user_id}@example.com"}}
        await send(client, write_key, "identify", identify)
    await embedded.processed(2)
    await subscribe(client, admin, "member-1", channel="email", topic="recall", subscribed=False)
    await subscribe(client, admin, "guest-1", channel="sms", topic="*", subscribed=False)
    await subscribe(client, admin, "guest-1", channel="email", topic="recall", subscribed=True)

    alias = {"previousId": "guest-1", "userId": "member-1"}
    await send(client, write_key, "alias", alias)
    await embedded.processed(3)

    merged = await client.get("/v1/users/member-1/subscriptions", headers=admin)
    assert merged.status_code == 200, merged.text
    assert [
        (s["channel"], s["topic"], s["subscribed"]) for s in merged.json()["subscriptions"]
    ] == [
        ("email", "recall", True),
        ("sms", "*", False),
    ]
    assert len(subscriptions(engine)) == 2
