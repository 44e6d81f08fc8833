"""APNs: a local HTTP/2 server (hypercorn, h2c) plays Apple; the provider token is checked with
the signing key's public half."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypercorn.asyncio import serve
from hypercorn.config import Config

from service.delivery.providers import (
    Account,
    Outgoing,
    ProviderConfigError,
    ProviderError,
    build_adapter,
)
from service.kit.settings import Settings
from tests.helpers.polling import eventually, refused
from workers.providers.push.apns import Apns

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
MESSAGE = Outgoing(
    9,
    "push",
    TOKEN,
    {
        "title": "Your trial ends soon",
        "body": "Two days left ✓",
        "deep_link": "app://billing",
        "data.plan": "pro",
    },
    platform="ios",
)


@dataclass
class Received:
    http_version: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeApns:
    """An ASGI app answering like APNs: each request gets the next planned answer, else 200."""

    requests: list[Received] = field(default_factory=list)
    answers: list[tuple[int, dict[str, Any] | None]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append(
            Received(scope["http_version"], scope["method"], scope["path"], headers, body)
        )
        status, answer = self.answers.pop(0) if self.answers else (200, None)
        reply = [(b"apns-id", headers.get("apns-id", "").encode())]
        payload = json.dumps(answer).encode() if answer else b""
        if answer:
            reply.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": reply})
        await send({"type": "http.response.body", "body": payload})


@pytest.fixture(scope="module")
def apple() -> Iterator[tuple[FakeApns, str]]:
    app = FakeApns()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(serve(app, config, shutdown_trigger=stop.wait),),  # type: ignore[arg-type]
        daemon=True,
    )
    thread.start()
    eventually(
        lambda: refused("127.0.0.1", port),
        until=lambda error: error is None,
        timeout=5,
        interval=0.02,
        what="the fake APNs server to accept connections",
    )
    yield app, f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)


@pytest.fixture
def server(apple: tuple[FakeApns, str]) -> FakeApns:
    app, _ = apple
    app.requests.clear()
    app.answers.clear()
    return app


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def options(signing: ec.EllipticCurvePrivateKey, **extra: str) -> dict[str, str]:
    return {
        "key": pem(signing),
        "key_id": "ABC123DEFG",
        "team_id": "DEF123GHIJ",
        "topic": "com.example.app",
        **extra,
    }


@pytest.fixture
def provider(
    apple: tuple[FakeApns, str], signing_key: ec.EllipticCurvePrivateKey, server: FakeApns
) -> Apns:
    found = build_adapter(
        Account("apns", "apns", options(signing_key, base_url=apple[1])), Settings()
    )
    assert isinstance(found, Apns)
    return found


def failure(provider: Apns) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        provider.send(MESSAGE)
    return raised.value


def claims(request: Received, key: ec.EllipticCurvePrivateKey, **decode: Any) -> dict[str, Any]:
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "bearer"
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "ABC123DEFG", "typ": "JWT"}
    found: dict[str, Any] = jwt.decode(token, key.public_key(), algorithms=["ES256"], **decode)
    return found


def test_a_message_reaches_apns_over_http2_with_a_signed_provider_token(
    provider: Apns, server: FakeApns, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    sent = provider.send(MESSAGE)

    [request] = server.requests
    assert request.http_version == "2"
    assert (request.method, request.path) == ("POST", f"/3/device/{TOKEN}")
    assert request.headers["apns-topic"] == "com.example.app"
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "10"
    assert uuid.UUID(request.headers["apns-id"])
    assert sent.provider_message_id == request.headers["apns-id"]
    assert claims(request, signing_key)["iss"] == "DEF123GHIJ"
    assert json.loads(request.body) == {
        "aps": {"alert": {"title": "Your trial ends soon", "body": "Two days left ✓"}},
        "deep_link": "app://billing",
        "plan": "pro",
        "lifeline_message_id": "9",
    }


def test_a_retry_carries_the_same_apns_id_and_another_message_a_different_one(
    provider: Apns, server: FakeApns
) -> None:
    server.answers.append((503, {"reason": "ServiceUnavailable"}))

    assert failure(provider).kind == "retryable"
    provider.send(MESSAGE)
    provider.send(Outgoing(10, "push", TOKEN, MESSAGE.content))

    first, retry, other = (r.headers["apns-id"] for r in server.requests)
    assert first == retry != other


def test_the_provider_token_is_reused_for_40_minutes_then_signed_again(
    provider: Apns, server: FakeApns, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    start = time.time()
    now = [start]
    provider.clock = lambda: now[0]

    provider.send(MESSAGE)
    now[0] += 39 * 60
    provider.send(MESSAGE)
    now[0] += 2 * 60
    provider.send(MESSAGE)

    first, reused, fresh = server.requests
    assert first.headers["authorization"] == reused.headers["authorization"]
    assert fresh.headers["authorization"] != first.headers["authorization"]
    issued = [claims(r, signing_key, options={"verify_iat": False})["iat"] for r in server.requests]
    assert issued == [int(start), int(start), int(start + 41 * 60)]


def test_an_expired_provider_token_is_retried_with_a_freshly_signed_one(
    provider: Apns, server: FakeApns, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    now = [time.time() - 60]
    provider.clock = lambda: now[0]
    server.answers.append((403, {"reason": "ExpiredProviderToken"}))

    assert failure(provider).kind == "retryable"
    now[0] += 30  # well inside the 40 minutes: only Apple's answer makes it sign again
    provider.send(MESSAGE)

    rejected, accepted = server.requests
    assert accepted.headers["authorization"] != rejected.headers["authorization"]
    assert claims(accepted, signing_key)["iat"] == int(now[0])


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (410, "Unregistered", "address_gone"),
        (400, "BadDeviceToken", "address_gone"),
        (400, "BadTopic", "permanent"),
        (413, "PayloadTooLarge", "permanent"),
        (403, "InvalidProviderToken", "permanent"),
        (429, "TooManyRequests", "retryable"),
        (500, "InternalServerError", "retryable"),
        (503, "ServiceUnavailable", "retryable"),
    ],
)
def test_apns_errors_are_classified_as_apple_documents_them(
    provider: Apns, server: FakeApns, status: int, reason: str, kind: str
) -> None:
    server.answers.append((status, {"reason": reason, "timestamp": 1_700_000_000_000}))

    error = failure(provider)

    assert (error.kind, reason in error.reason) == (kind, True)


def test_sandbox_and_key_file_options(
    tmp_path: Path, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    key_file = tmp_path / "AuthKey_ABC123DEFG.p8"
    key_file.write_text(pem(signing_key))
    settings = options(signing_key, environment="sandbox", key_file=str(key_file))
    del settings["key"]

    found = build_adapter(Account("apns", "apns", settings), Settings())

    assert found.base == "https://api.sandbox.push.apple.com"


def test_a_missing_or_wrong_signing_key_is_a_configuration_error(
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:
    without_key = options(signing_key)
    del without_key["key"]
    with pytest.raises(ProviderConfigError, match="LIFELINE_APNS_KEY_FILE"):
        build_adapter(Account("apns", "apns", without_key, where="LIFELINE_APNS_{KEY}"), Settings())
    with pytest.raises(ProviderConfigError, match="not an APNs"):
        build_adapter(Account("apns", "apns", options(signing_key, key="nope")), Settings())
