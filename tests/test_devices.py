"""Push devices through the admin API: backends register, list and remove them; a registered
browser gets its push. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine

from service.kit.db import unit_of_work, utcnow
from service.kit.settings import Settings
from service.models import Device
from tests.helpers.api import send
from tests.helpers.rules import RulePack
from tests.helpers.waiting import EmbeddedWorker

APNS = "a1b2c3d4" * 8
FCM = "dGVzdC10b2tlbg:APA91bH-abc_def123"
P256DH = base64.urlsafe_b64encode(b"\x04" + bytes(range(64))).rstrip(b"=").decode()
AUTH = base64.urlsafe_b64encode(bytes(range(16))).rstrip(b"=").decode()
ENDPOINT = "https://fcm.googleapis.com/fcm/send/abc:def"
SUBSCRIPTION = {
    "endpoint": ENDPOINT,
    "expirationTime": None,
    "keys": {"p256dh": P256DH, "auth": AUTH},
}
STORED_SUBSCRIPTION = json.dumps(
    {"endpoint": ENDPOINT, "keys": {"p256dh": P256DH, "auth": AUTH}}, separators=(",", ":")
)
RULES = """
rules:
  - id: hello
    category: recall
    trigger: {event: App Opened}
    steps:
      - send: {channel: push, template: reminder}
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return RulePack(tmp_path / "rules").rules(RULES).write()


@pytest.fixture
async def users(client: httpx.AsyncClient, write_key: str, embedded: EmbeddedWorker) -> list[str]:
    batch: list[dict[str, Any]] = [
        {"type": "identify", "userId": u, "traits": {}} for u in ("u-1", "u-2")
    ]
    await send(client, write_key, "batch", {"batch": batch})
    await embedded.processed(2)
    return ["u-1", "u-2"]


async def register(
    client: httpx.AsyncClient, admin: dict[str, str], user: str, platform: str, token: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/users/{user}/devices", headers=admin, json={"platform": platform, "token": token}
    )


async def listed(client: httpx.AsyncClient, admin: dict[str, str], user: str) -> list[Any]:
    response = await client.get(f"/v1/users/{user}/devices", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["userId"] == user
    devices: list[Any] = response.json()["devices"]
    return devices


def stored_tokens(engine: Engine) -> list[tuple[str, str]]:
    with unit_of_work(engine) as uow:
        rows = uow.session.query(Device).order_by(Device.id)
        return [(d.platform, d.token) for d in rows]


async def test_register_and_list_devices_without_showing_their_tokens(
    client: httpx.AsyncClient, admin: dict[str, str], engine: Engine, users: list[str]
) -> None:
    ios = await register(client, admin, "u-1", "ios", APNS.upper())
    assert ios.status_code == 201, ios.text
    android = await register(client, admin, "u-1", "android", FCM)
    web = await register(client, admin, "u-1", "web", SUBSCRIPTION)
    assert (android.status_code, web.status_code) == (201, 201)

    devices = await listed(client, admin, "u-1")
    assert [(d["id"], d["platform"], d["tokenHint"], d["enabled"]) for d in devices] == [
        (web.json()["id"], "web", "fcm.googleapis.com", True),
        (android.json()["id"], "android", "…def123", True),
        (ios.json()["id"], "ios", "…b2c3d4", True),
    ]
    assert not any(APNS in json.dumps(d) or FCM in json.dumps(d) for d in devices)
    assert await listed(client, admin, "u-2") == []
    # Stored as delivery needs them: APNs hex lower-cased, the subscription as compact JSON.
    assert stored_tokens(engine) == [
        ("ios", APNS),
        ("android", FCM),
        ("web", STORED_SUBSCRIPTION),
    ]


async def test_registering_again_enables_the_same_device_without_a_duplicate(
    client: httpx.AsyncClient, admin: dict[str, str], engine: Engine, users: list[str]
) -> None:
    first = await register(client, admin, "u-1", "ios", APNS)
    with unit_of_work(engine) as uow:  # the push service said the token stopped working
        uow.session.execute(update(Device).values(disabled_at=utcnow()))
    [gone] = await listed(client, admin, "u-1")
    assert (gone["enabled"], gone["disabledAt"] is not None) == (False, True)

    again = await register(client, admin, "u-1", "ios", APNS)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    [device] = await listed(client, admin, "u-1")
    assert (device["enabled"], device["disabledAt"]) == (True, None)
    assert len(stored_tokens(engine)) == 1


async def test_a_web_subscription_is_one_device_per_endpoint_and_may_come_as_json_text(
    client: httpx.AsyncClient, admin: dict[str, str], engine: Engine, users: list[str]
) -> None:
    first = await register(client, admin, "u-1", "web", json.dumps(SUBSCRIPTION))
    assert first.status_code == 201, first.text
    renewed_auth = base64.urlsafe_b64encode(b"\xff" * 16).rstrip(b"=").decode()
    renewed = {"endpoint": ENDPOINT, "keys": {"p256dh": P256DH, "auth": renewed_auth}}
    again = await register(client, admin, "u-1", "web", renewed)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    # The browser renewed its keys: the device keeps them, so pushes stay readable.
    [(_, token)] = stored_tokens(engine)
    assert json.loads(token)["keys"]["auth"] == renewed_auth


async def test_a_device_registered_to_another_user_moves_to_the_new_one(
    client: httpx.AsyncClient, admin: dict[str, str], engine: Engine, users: list[str]
) -> None:
    """Someone logs out and someone else logs in on the same phone: the first person must
    not get the second one's pushes."""
    first = await register(client, admin, "u-1", "android", FCM)
    moved = await register(client, admin, "u-2", "android", FCM)
    assert moved.status_code == 200, moved.text
    assert moved.json()["id"] == first.json()["id"]
    assert await listed(client, admin, "u-1") == []
    assert [d["id"] for d in await listed(client, admin, "u-2")] == [first.json()["id"]]
    assert len(stored_tokens(engine)) == 1


INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"platform": "ios", "token": "abc123"}, "body.token", "64 to 200 hexadecimal"),
    ({"platform": "ios", "token": "z" * 64}, "body.token", "64 to 200 hexadecimal"),
    ({"platform": "ios", "token": 12345}, "body.token", "a ios token is a string"),
    ({"platform": "android", "token": ""}, "body.token", "1 to 4096 characters"),
    ({"platform": "android", "token": "a b"}, "body.token", "no spaces"),
    ({"platform": "android", "token": "x" * 4097}, "body.token", "1 to 4096 characters"),
    ({"platform": "android", "token": SUBSCRIPTION}, "body.token", "is a string"),
    ({"platform": "web", "token": "not json"}, "body.token", "PushSubscription"),
    ({"platform": "web", "token": [1]}, "body.token", "PushSubscription object"),
    (
        {"platform": "web", "token": {**SUBSCRIPTION, "endpoint": "http://push.example/x"}},
        "body.token",
        "endpoint: must be an https:// URL",
    ),
    (
        {"platform": "web", "token": {**SUBSCRIPTION, "endpoint": "https://10.0.0.1/x"}},
        "body.token",
        "public host name",
    ),
    (
        {"platform": "web", "token": {**SUBSCRIPTION, "endpoint": "https://localhost/x"}},
        "body.token",
        "public host name",
    ),
    (
        {"platform": "web", "token": {"endpoint": ENDPOINT}},
        "body.token",
        "keys: the subscription's p256dh and auth keys are missing",
    ),
    (
        {
            "platform": "web",
            "token": {"endpoint": ENDPOINT, "keys": {"p256dh": "a+b/", "auth": AUTH}},
        },
        "body.token",
        "keys.p256dh: must be base64url",
    ),
    (
        {
            "platform": "web",
            "token": {"endpoint": ENDPOINT, "keys": {"p256dh": P256DH, "auth": "AAAA"}},
        },
        "body.token",
        "keys.auth: must encode 16 bytes, not 3",
    ),
    ({"platform": "web", "token": {**SUBSCRIPTION, "extra": 1}}, "body.token", "unknown"),
    ({"platform": "windows", "token": APNS}, "body.platform", "'ios', 'android' or 'web'"),
    ({"token": APNS}, "body.platform", "Field required"),
    ({"platform": "ios"}, "body.token", "Field required"),
    ({"platform": "ios", "token": APNS, "app": "x"}, "body.app", "Extra inputs"),
]


async def test_an_invalid_device_is_refused_saying_what_is_wrong(
    client: httpx.AsyncClient, admin: dict[str, str], engine: Engine, users: list[str]
) -> None:
    for body, field, message in INVALID:
        response = await client.post("/v1/users/u-1/devices", headers=admin, json=body)
        assert response.status_code == 400, (body, response.text)
        errors = response.json()["errors"]
        assert [e["field"] for e in errors] == [field], body
        assert message in errors[0]["message"], (body, errors)
    assert stored_tokens(engine) == []


async def test_remove_a_device_by_id_or_by_token(
    client: httpx.AsyncClient, admin: dict[str, str], engine: Engine, users: list[str]
) -> None:
    ios = (await register(client, admin, "u-1", "ios", APNS)).json()
    await register(client, admin, "u-1", "web", SUBSCRIPTION)
    # Another user's device cannot be removed through this user.
    response = await client.delete(f"/v1/users/u-2/devices/{ios['id']}", headers=admin)
    assert response.status_code == 404

    response = await client.delete(f"/v1/users/u-1/devices/{ios['id']}", headers=admin)
    assert response.status_code == 204, response.text
    assert [d["platform"] for d in await listed(client, admin, "u-1")] == ["web"]
    response = await client.delete(f"/v1/users/u-1/devices/{ios['id']}", headers=admin)
    assert response.status_code == 404

    # At log-out a backend knows the token, not our id; the keys need not be the latest.
    other_keys = {"endpoint": ENDPOINT, "keys": {"p256dh": P256DH, "auth": "A" * 22}}
    response = await client.request(
        "DELETE",
        "/v1/users/u-1/devices",
        headers=admin,
        json={"platform": "web", "token": other_keys},
    )
    assert response.status_code == 204, response.text
    assert await listed(client, admin, "u-1") == []
    assert stored_tokens(engine) == []
    response = await client.request(
        "DELETE",
        "/v1/users/u-1/devices",
        headers=admin,
        json={"platform": "web", "token": other_keys},
    )
    assert response.status_code == 404


async def test_unknown_and_erased_users(
    client: httpx.AsyncClient, admin: dict[str, str], engine: Engine, users: list[str]
) -> None:
    response = await register(client, admin, "nobody", "ios", APNS)
    assert response.status_code == 404
    assert response.json()["error"] == "no user 'nobody'"
    assert (await client.get("/v1/users/nobody/devices", headers=admin)).status_code == 404

    await register(client, admin, "u-1", "ios", APNS)
    await register(client, admin, "u-1", "web", SUBSCRIPTION)
    await register(client, admin, "u-2", "android", FCM)
    assert (await client.delete("/v1/users/u-1", headers=admin)).status_code == 200
    # Erasure removes the person's devices (a token identifies their phone); others stay.
    assert await listed(client, admin, "u-1") == []
    assert stored_tokens(engine) == [("android", FCM)]
    response = await register(client, admin, "u-1", "ios", APNS)
    assert response.status_code == 409
    assert stored_tokens(engine) == [("android", FCM)]


async def test_the_devices_api_needs_the_admin_token(
    client: httpx.AsyncClient, engine: Engine, users: list[str]
) -> None:
    body = {"platform": "ios", "token": APNS}
    for method, path, payload in [
        ("GET", "/v1/users/u-1/devices", None),
        ("POST", "/v1/users/u-1/devices", body),
        ("DELETE", "/v1/users/u-1/devices", body),
        ("DELETE", "/v1/users/u-1/devices/1", None),
    ]:
        response = await client.request(method, path, json=payload)
        assert response.status_code == 401, (method, path)
        wrong = {"Authorization": "Bearer nope"}
        response = await client.request(method, path, json=payload, headers=wrong)
        assert response.status_code == 401, (method, path)
    assert stored_tokens(engine) == []


async def test_a_registered_browser_gets_its_push(
    settings: Settings,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    write_key: str,
    users: list[str],
    embedded: EmbeddedWorker,
) -> None:
    response = await register(client, admin, "u-1", "web", SUBSCRIPTION)
    assert response.status_code == 201, response.text
    await send(client, write_key, "track", {"userId": "u-1", "event": "App Opened"})

    [message] = await embedded.settled(1)
    assert (message.channel, message.status) == ("push", "sent")
    [path] = settings.outbox_dir.iterdir()
    assert json.loads(path.read_text()) == {
        "message_id": message.id,
        "channel": "push",
        "to": STORED_SUBSCRIPTION,
        "title": "reminder",
        "body": "reminder",
    }
