"""FCM HTTP v1: a local server plays Google's token endpoint and FCM; the adapter's OAuth
assertion is checked with the service account's public key."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from service.delivery.providers import (
    Account,
    Outgoing,
    ProviderConfigError,
    ProviderError,
    build_adapter,
)
from service.kit.settings import Settings
from workers.providers.push.fcm import Fcm

PROJECT = "lifeline-demo"
SEND_PATH = f"/v1/projects/{PROJECT}/messages:send"
MESSAGE = Outgoing(
    7,
    "push",
    "device-token-abc",
    {
        "title": "Your trial ends soon",
        "body": "Two days left ✓",
        "deep_link": "app://billing",
        "data.plan": "pro",
    },
    platform="android",
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def service_account(rsa_key: rsa.RSAPrivateKey, httpserver: HTTPServer) -> dict[str, str]:
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "key-1",
        "private_key": pem,
        "client_email": "lifeline@lifeline-demo.iam.gserviceaccount.com",
        "token_uri": httpserver.url_for("/token"),
    }


class TokenEndpoint:
    """Google's OAuth endpoint: checks the signed assertion, hands out numbered tokens."""

    def __init__(self, key: rsa.RSAPrivateKey, audience: str):
        self.public_key = key.public_key()
        self.audience = audience
        self.claims: list[dict[str, Any]] = []

    def __call__(self, request: Request) -> Response:
        form = parse_qs(request.get_data(as_text=True))
        assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        assertion = form["assertion"][0]
        assert jwt.get_unverified_header(assertion)["kid"] == "key-1"
        claims = jwt.decode(
            assertion, self.public_key, algorithms=["RS256"], audience=self.audience
        )
        self.claims.append(claims)
        body = {"access_token": f"token-{len(self.claims)}", "expires_in": 3599}
        return Response(json.dumps(body), content_type="application/json")


@pytest.fixture
def tokens(
    httpserver: HTTPServer, rsa_key: rsa.RSAPrivateKey, service_account: dict[str, str]
) -> TokenEndpoint:
    endpoint = TokenEndpoint(rsa_key, service_account["token_uri"])
    httpserver.expect_request("/token", method="POST").respond_with_handler(endpoint)
    return endpoint


@pytest.fixture
def provider(httpserver: HTTPServer, service_account: dict[str, str]) -> Fcm:
    account = Account(
        "fcm",
        "fcm",
        {"service_account_json": json.dumps(service_account), "base_url": httpserver.url_for("")},
    )
    found = build_adapter(account, Settings())
    assert isinstance(found, Fcm)
    return found


def fcm_error(status: int, code: str, message: str, **extra: Any) -> Response:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]
    body = {"error": {"code": status, "message": message, "status": code, "details": details}}
    return Response(json.dumps(body), status=status, content_type="application/json", **extra)


def failure(provider: Fcm) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        provider.send(MESSAGE)
    return raised.value


def sends(httpserver: HTTPServer) -> list[Request]:
    return [request for request, _ in httpserver.log if request.path == SEND_PATH]


def test_a_message_reaches_fcm_with_an_oauth_token_traded_for_a_signed_assertion(
    provider: Fcm, tokens: TokenEndpoint, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(SEND_PATH, method="POST").respond_with_json(
        {"name": f"projects/{PROJECT}/messages/0:1500415314455276%31bd1c96"}
    )

    sent = provider.send(MESSAGE)

    assert sent.provider_message_id == f"projects/{PROJECT}/messages/0:1500415314455276%31bd1c96"
    [claims] = tokens.claims
    assert claims["iss"] == "lifeline@lifeline-demo.iam.gserviceaccount.com"
    assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert claims["exp"] - claims["iat"] == 3600
    [request] = sends(httpserver)
    assert request.headers["Authorization"] == "Bearer token-1"
    assert request.get_json() == {
        "message": {
            "token": "device-token-abc",
            "notification": {"title": "Your trial ends soon", "body": "Two days left ✓"},
            "data": {"plan": "pro", "deep_link": "app://billing", "lifeline_message_id": "7"},
        }
    }


def test_the_access_token_is_reused_until_shortly_before_it_expires(
    provider: Fcm, tokens: TokenEndpoint, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(SEND_PATH).respond_with_json({"name": "m"})
    now = [time.time() - 3400]  # the server checks each assertion's iat and exp: keep them real
    provider.clock = lambda: now[0]

    provider.send(MESSAGE)
    now[0] += 3000  # 50 minutes: the token has ten minutes left
    provider.send(MESSAGE)
    assert len(tokens.claims) == 1
    now[0] += 400  # under five minutes left: trade a fresh one before sending
    provider.send(MESSAGE)

    assert len(tokens.claims) == 2
    assert [r.headers["Authorization"] for r in sends(httpserver)] == [
        "Bearer token-1",
        "Bearer token-1",
        "Bearer token-2",
    ]


def test_a_401_drops_the_cached_token_so_the_retry_trades_a_new_one(
    provider: Fcm, tokens: TokenEndpoint, httpserver: HTTPServer
) -> None:
    httpserver.expect_oneshot_request(SEND_PATH).respond_with_response(
        fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
    )
    httpserver.expect_oneshot_request(SEND_PATH).respond_with_json({"name": "m"})

    error = failure(provider)
    assert error.kind == "retryable"
    provider.send(MESSAGE)

    assert len(tokens.claims) == 2
    assert sends(httpserver)[-1].headers["Authorization"] == "Bearer token-2"


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (fcm_error(404, "UNREGISTERED", "Requested entity was not found."), "address_gone"),
        (
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
            ),
            "address_gone",
        ),
        (fcm_error(400, "INVALID_ARGUMENT", "Message is too big"), "permanent"),
        (fcm_error(403, "SENDER_ID_MISMATCH", "SenderId mismatch"), "permanent"),
        (fcm_error(401, "THIRD_PARTY_AUTH_ERROR", "Auth error from APNS"), "permanent"),
        (fcm_error(500, "INTERNAL", "Internal error encountered."), "retryable"),
    ],
)
def test_fcm_errors_are_classified_as_its_documentation_says(
    provider: Fcm, tokens: TokenEndpoint, httpserver: HTTPServer, response: Response, kind: str
) -> None:
    httpserver.expect_request(SEND_PATH).respond_with_response(response)

    error = failure(provider)

    assert error.kind == kind
    assert json.loads(response.get_data())["error"]["details"][0]["errorCode"] in error.reason


@pytest.mark.parametrize(("status", "code"), [(429, "QUOTA_EXCEEDED"), (503, "UNAVAILABLE")])
def test_quota_and_outages_are_retried_after_the_time_fcm_asks_for(
    provider: Fcm, tokens: TokenEndpoint, httpserver: HTTPServer, status: int, code: str
) -> None:
    httpserver.expect_request(SEND_PATH).respond_with_response(
        fcm_error(status, code, "try later", headers={"Retry-After": "30"})
    )

    error = failure(provider)

    assert (error.kind, error.retry_after) == ("retryable", 30.0)


def test_a_key_the_token_endpoint_refuses_is_permanent_and_not_repeated_in_the_reason(
    provider: Fcm, httpserver: HTTPServer, service_account: dict[str, str]
) -> None:
    httpserver.expect_request("/token").respond_with_json(
        {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, status=400
    )

    error = failure(provider)

    assert error.kind == "permanent"
    assert "invalid_grant" in error.reason
    assert "PRIVATE KEY" not in error.reason
    assert sends(httpserver) == []


def test_the_key_can_be_a_file_and_its_absence_is_a_clear_configuration_error(
    tmp_path: Any, service_account: dict[str, str]
) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(service_account))
    from_file = build_adapter(
        Account("fcm", "fcm", {"service_account_file": str(key_file)}), Settings()
    )
    assert from_file.url == f"https://fcm.googleapis.com/v1/projects/{PROJECT}/messages:send"

    with pytest.raises(ProviderConfigError, match="LIFELINE_FCM_SERVICE_ACCOUNT_FILE"):
        build_adapter(Account("fcm", "fcm", {}, where="LIFELINE_FCM_{KEY}"), Settings())
    with pytest.raises(ProviderConfigError, match="not a service account key"):
        build_adapter(Account("fcm", "fcm", {"service_account_json": '{"type": "x"}'}), Settings())
