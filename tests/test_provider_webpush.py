"""Web Push: a local server plays the browser's push service; the test holds the subscriber's
keys, decrypts what arrived as the browser would, and checks the VAPID signature."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import http_ece  # type: ignore[import-untyped]
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pytest_httpserver import HTTPServer
from werkzeug import Request

from service.delivery.providers import (
    Account,
    Outgoing,
    ProviderConfigError,
    ProviderError,
    build_adapter,
)
from service.kit.settings import Settings
from workers.providers.push.webpush import WebPush

PUSH_PATH = "/wpush/v2/subscription-123"
CONTENT = {
    "title": "Your trial ends soon",
    "body": "Two days left ✓",
    "deep_link": "https://app.example/billing",
    "data.plan": "pro",
}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


@pytest.fixture(scope="module")
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class Browser:
    """The subscriber: the keys a browser makes when a site subscribes it to push."""

    def __init__(self, endpoint: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        self.endpoint = endpoint

    def subscription(self) -> str:
        keys = {"p256dh": b64(public_bytes(self.key)), "auth": b64(self.auth)}
        return json.dumps({"endpoint": self.endpoint, "keys": keys})

    def read(self, request: Request) -> Any:
        plain = http_ece.decrypt(
            request.get_data(), private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )
        return json.loads(plain)


@pytest.fixture
def browser(httpserver: HTTPServer) -> Browser:
    return Browser(httpserver.url_for(PUSH_PATH))


def account(key: ec.EllipticCurvePrivateKey, **extra: str) -> Account:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    options = {
        "vapid_private_key": pem,
        "vapid_subject": "mailto:ops@example.com",
        "allow_http": "true",
        **extra,
    }
    return Account("webpush", "webpush", options, where="LIFELINE_WEBPUSH_{KEY}")


@pytest.fixture
def provider(vapid_key: ec.EllipticCurvePrivateKey) -> WebPush:
    found = build_adapter(account(vapid_key), Settings())
    assert isinstance(found, WebPush)
    return found


def message(browser: Browser) -> Outgoing:
    return Outgoing(11, "push", browser.subscription(), CONTENT, platform="web")


def test_the_browser_decrypts_the_message_and_the_push_service_can_verify_the_sender(
    provider: WebPush,
    browser: Browser,
    httpserver: HTTPServer,
    vapid_key: ec.EllipticCurvePrivateKey,
) -> None:
    httpserver.expect_request(PUSH_PATH, method="POST").respond_with_data(
        "", status=201, headers={"Location": httpserver.url_for("/m/abc")}
    )

    sent = provider.send(message(browser))

    assert sent.provider_message_id == httpserver.url_for("/m/abc")
    [(request, _)] = httpserver.log
    assert request.headers["Content-Encoding"] == "aes128gcm"
    assert request.headers["TTL"] == "2419200"
    assert "Urgency" not in request.headers
    assert browser.read(request) == {
        "title": "Your trial ends soon",
        "body": "Two days left ✓",
        "deep_link": "https://app.example/billing",
        "data": {"plan": "pro"},
        "lifeline_message_id": "11",
    }
    scheme, _, params = request.headers["Authorization"].partition(" ")
    assert scheme == "vapid"
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert unb64(fields["k"]) == public_bytes(vapid_key)
    origin = httpserver.url_for("/").rstrip("/")
    claims = jwt.decode(fields["t"], vapid_key.public_key(), algorithms=["ES256"], audience=origin)
    assert claims["sub"] == "mailto:ops@example.com"
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600


def test_every_message_is_encrypted_with_a_fresh_sender_key(
    provider: WebPush, browser: Browser, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PUSH_PATH).respond_with_data("", status=201)

    provider.send(message(browser))
    provider.send(message(browser))

    first, second = (request.get_data() for request, _ in httpserver.log)
    # aes128gcm header: salt (16), record size (4), key id length (1), key id (the sender key)
    assert first[:16] != second[:16]
    assert first[21:86] != second[21:86]
    assert [browser.read(request)["title"] for request, _ in httpserver.log] == [
        "Your trial ends soon"
    ] * 2


def test_ttl_urgency_and_a_raw_base64url_vapid_key_from_a_file(
    tmp_path: Path, browser: Browser, httpserver: HTTPServer
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "vapid.key"
    key_file.write_text(b64(key.private_numbers().private_value.to_bytes(32, "big")) + "\n")
    options = {"vapid_private_key": "", "vapid_private_key_file": str(key_file)}  # "" is unset
    provider = build_adapter(account(key, ttl="3600", urgency="high", **options), Settings())
    httpserver.expect_request(PUSH_PATH).respond_with_data("", status=201)

    provider.send(message(browser))

    [(request, _)] = httpserver.log
    assert (request.headers["TTL"], request.headers["Urgency"]) == ("3600", "high")
    token = request.headers["Authorization"].split("t=")[1].split(",")[0]
    jwt.decode(token, key.public_key(), algorithms=["ES256"], options={"verify_aud": False})


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (410, "address_gone"),
        (404, "address_gone"),
        (413, "permanent"),
        (400, "permanent"),
        (429, "retryable"),
        (503, "retryable"),
    ],
)
def test_push_service_answers_are_classified(
    provider: WebPush, browser: Browser, httpserver: HTTPServer, status: int, kind: str
) -> None:
    httpserver.expect_request(PUSH_PATH).respond_with_data(
        "push subscription has unsubscribed or expired.", status=status
    )

    with pytest.raises(ProviderError) as raised:
        provider.send(message(browser))

    assert raised.value.kind == kind
    assert f"HTTP {status}" in raised.value.reason


@pytest.mark.parametrize(
    "token",
    [
        "not json",
        json.dumps({"endpoint": "https://push.example/x"}),
        json.dumps({"endpoint": "https://push.example/x", "keys": {"p256dh": "AAAA", "auth": "a"}}),
    ],
)
def test_a_token_that_is_not_a_subscription_is_permanent_and_sends_nothing(
    provider: WebPush, httpserver: HTTPServer, token: str
) -> None:
    with pytest.raises(ProviderError) as raised:
        provider.send(Outgoing(11, "push", token, CONTENT))

    assert raised.value.kind == "permanent"
    assert httpserver.log == []


def test_plain_http_endpoints_are_refused_unless_allowed(
    vapid_key: ec.EllipticCurvePrivateKey, browser: Browser, httpserver: HTTPServer
) -> None:
    strict = build_adapter(account(vapid_key, allow_http="false"), Settings())

    with pytest.raises(ProviderError, match="https") as raised:
        strict.send(message(browser))

    assert raised.value.kind == "permanent"
    assert httpserver.log == []


def test_configuration_errors_name_the_setting(vapid_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ProviderConfigError, match="LIFELINE_WEBPUSH_VAPID_PRIVATE_KEY"):
        build_adapter(account(vapid_key, vapid_private_key=""), Settings())
    with pytest.raises(ProviderConfigError, match="not a P-256 private key"):
        build_adapter(account(vapid_key, vapid_private_key="bm90IGEga2V5"), Settings())
    with pytest.raises(ProviderConfigError, match="mailto"):
        build_adapter(account(vapid_key, vapid_subject="ops@example.com"), Settings())


def resolving_to(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> list[str]:
    """DNS answers `addresses` for every host; returns the hosts asked about."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def strict_provider(vapid_key: ec.EllipticCurvePrivateKey, posted: list[httpx.Request]) -> WebPush:
    def push_service(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(201, headers={"Location": "https://push.example/m/1"})

    client = httpx.Client(transport=httpx.MockTransport(push_service))
    return WebPush("webpush", vapid_key, "mailto:ops@example.com", client=client)


SECRET_PATH = "/wpush/v2/subscriber-secret-path"


@pytest.mark.parametrize(
    "addresses",
    [
        ("127.0.0.1",),
        ("10.0.0.5",),
        ("192.168.1.10",),
        ("169.254.169.254",),  # cloud metadata
        ("::1",),
        ("fd00::1",),
        ("::ffff:127.0.0.1",),
        ("93.184.215.14", "10.0.0.5"),  # one private answer is enough to refuse
    ],
)
def test_endpoints_on_private_addresses_are_refused_without_a_request(
    vapid_key: ec.EllipticCurvePrivateKey,
    monkeypatch: pytest.MonkeyPatch,
    addresses: tuple[str, ...],
) -> None:
    asked = resolving_to(monkeypatch, *addresses)
    posted: list[httpx.Request] = []
    browser = Browser("https://internal.example" + SECRET_PATH)

    with pytest.raises(ProviderError) as raised:
        strict_provider(vapid_key, posted).send(message(browser))

    assert raised.value.kind == "permanent"
    assert "not on a public address" in raised.value.reason
    assert SECRET_PATH not in raised.value.reason
    assert (asked, posted) == (["internal.example"], [])


def test_endpoints_on_public_addresses_are_sent_to(
    vapid_key: ec.EllipticCurvePrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolving_to(monkeypatch, "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    posted: list[httpx.Request] = []
    browser = Browser("https://fcm.googleapis.com" + SECRET_PATH)

    sent = strict_provider(vapid_key, posted).send(message(browser))

    assert sent.provider_message_id == "https://push.example/m/1"
    [request] = posted
    assert str(request.url) == browser.endpoint
    plain = http_ece.decrypt(
        request.content, private_key=browser.key, auth_secret=browser.auth, version="aes128gcm"
    )
    assert json.loads(plain)["title"] == CONTENT["title"]
