"""The admin API's bearer token: what a client without it is told, and what /openapi.json
declares (so generated clients and the /docs page send it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from service.kit.settings import Settings
from workers.api import create_api

HINT = "admin API: send Authorization: Bearer <LIFELINE_ADMIN_TOKEN>"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer wrong-token", "Basic dGVzdC1hZG1pbi10b2tlbjo=", "test-admin-token"],
)
async def test_a_request_without_the_token_is_told_what_to_send(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.get("/v1/suppressions", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"success": False, "error": HINT}
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_token_is_accepted_in_any_case_of_the_scheme(
    client: httpx.AsyncClient,
) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = await client.get(
            "/v1/suppressions", headers={"Authorization": f"{scheme}  test-admin-token "}
        )
        assert response.status_code == 200, (scheme, response.text)


@pytest.fixture
async def tokenless_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_api(settings.model_copy(update={"admin_token": None}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lifeline.test") as c:
            yield c


async def test_a_server_without_a_token_says_so(tokenless_client: httpx.AsyncClient) -> None:
    response = await tokenless_client.get(
        "/v1/suppressions", headers={"Authorization": "Bearer anything"}
    )
    assert response.status_code == 401
    assert response.json()["error"] == HINT + " (no LIFELINE_ADMIN_TOKEN is set on the server)"


async def test_openapi_declares_the_bearer_scheme_on_admin_operations_only(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    [(name, scheme)] = schemes.items()
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    operations = {
        (method.upper(), path): operation
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }
    secured = {key for key, op in operations.items() if op.get("security") == [{name: []}]}
    admin = ("/v1/users", "/v1/suppressions", "/v1/messages", "/v1/admin")
    assert secured == {(method, path) for method, path in operations if path.startswith(admin)}
    assert {
        ("GET", "/v1/users/{user_id}"),
        ("DELETE", "/v1/users/{user_id}"),
        ("POST", "/v1/users/{user_id}/devices"),
        ("POST", "/v1/users/{user_id}/subscriptions"),
        ("POST", "/v1/suppressions"),
        ("GET", "/v1/messages/{message_id}"),
        ("GET", "/v1/admin/rules"),
    } <= secured
    public = {op.get("security") is None for key, op in operations.items() if key not in secured}
    assert public == {True}  # tracking, link pages, webhooks, health: no admin token
