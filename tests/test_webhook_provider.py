"""The webhook provider: the request a receiver gets, and how each answer is classified."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import respx

from service.delivery.accounts import load_provider
from service.delivery.providers import Outgoing, ProviderError
from service.kit.settings import Settings
from workers.providers.webhook import Webhook

URL = "https://relay.example/lifeline"
SECRET = "webhook-test-secret"
MESSAGE = Outgoing(
    42,
    "email",
    "ada@example.com",
    {"subject": "Welcome", "html": "<p>Hi Ada ✓</p>", "text": "Hi Ada ✓"},
    {"List-Unsubscribe": "<https://lifeline.example/v1/unsubscribe/t>"},
    idempotency_key="lifeline-message-42",
)


@pytest.fixture
def settings() -> Settings:
    return Settings(webhook_url=URL, webhook_secret=SECRET, webhook_timeout_seconds=3)


@pytest.fixture
def provider(settings: Settings) -> Webhook:
    found = load_provider("webhook-email", settings)
    assert isinstance(found, Webhook)
    return found


@pytest.fixture
def relay() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def failure(provider: Webhook) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        provider.send(MESSAGE)
    return raised.value


@pytest.mark.parametrize("channel", ["email", "sms", "push"])
def test_the_webhook_providers_are_installed_and_idempotent(
    settings: Settings, channel: str
) -> None:
    provider = load_provider(f"webhook-{channel}", settings)
    assert isinstance(provider, Webhook)
    assert (provider.name, provider.channel, provider.idempotent) == (
        f"webhook-{channel}",
        channel,
        True,
    )
    assert provider.client.timeout == httpx.Timeout(3)


def test_without_a_url_the_provider_says_which_setting_is_missing() -> None:
    with pytest.raises(ValueError, match="webhook-sms provider needs LIFELINE_WEBHOOK_URL"):
        load_provider("webhook-sms", Settings(webhook_url=None))


def test_posts_the_message_as_json_with_its_key_and_a_verifiable_signature(
    provider: Webhook, relay: respx.MockRouter
) -> None:
    route = relay.post(URL).respond(202, json={"id": "relay-7"})

    sent = provider.send(MESSAGE)

    assert sent.provider_message_id == "relay-7"
    [call] = route.calls
    request = call.request
    assert request.headers["Idempotency-Key"] == "lifeline-message-42"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "message_id": 42,
        "channel": "email",
        "to": "ada@example.com",
        "content": MESSAGE.content,
        "headers": MESSAGE.headers,
    }
    expected = hmac.new(SECRET.encode(), request.content, hashlib.sha256).hexdigest()
    assert request.headers["X-Lifeline-Signature"] == f"sha256={expected}"


def test_the_client_is_reused_and_unsigned_without_a_secret(relay: respx.MockRouter) -> None:
    provider = load_provider("webhook-push", Settings(webhook_url=URL))
    assert isinstance(provider, Webhook)
    client = provider.client
    route = relay.post(URL).respond(200, text="ok")

    assert provider.send(MESSAGE).provider_message_id is None  # not JSON: no id
    assert provider.send(MESSAGE).provider_message_id is None

    assert provider.client is client
    assert route.call_count == 2
    assert all("X-Lifeline-Signature" not in c.request.headers for c in route.calls)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (httpx.ReadTimeout("read timed out"), "timed out: ReadTimeout"),
        (httpx.ConnectTimeout("connect timed out"), "timed out: ConnectTimeout"),
        (httpx.ConnectError("connection refused"), "ConnectError: connection refused"),
    ],
)
def test_a_timeout_or_connection_error_is_retried(
    provider: Webhook, relay: respx.MockRouter, error: Exception, reason: str
) -> None:
    relay.post(URL).mock(side_effect=error)
    raised = failure(provider)
    assert (raised.kind, raised.reason, raised.retry_after) == ("retryable", reason, None)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_retried(provider: Webhook, relay: respx.MockRouter, status: int) -> None:
    relay.post(URL).respond(status, text="upstream\n  unavailable")
    raised = failure(provider)
    assert (raised.kind, raised.reason) == ("retryable", f"HTTP {status}: upstream unavailable")


@pytest.mark.parametrize(("header", "wait"), [("12", 12.0), ("0.5", 0.5), (None, None)])
def test_too_many_requests_is_retried_after_the_wait_it_asks_for(
    provider: Webhook, relay: respx.MockRouter, header: str | None, wait: float | None
) -> None:
    headers = {"Retry-After": header} if header else {}
    relay.post(URL).respond(429, headers=headers, text="slow down")
    raised = failure(provider)
    assert (raised.kind, raised.reason, raised.retry_after) == (
        "retryable",
        "HTTP 429: slow down",
        wait,
    )


def test_a_retry_after_date_is_the_wait_until_that_date(
    provider: Webhook, relay: respx.MockRouter
) -> None:
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    relay.post(URL).respond(429, headers={"Retry-After": later})
    assert 110 <= (failure(provider).retry_after or 0) <= 120
    relay.post(URL).respond(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert failure(provider).retry_after == 0


def test_an_unreadable_retry_after_falls_back_to_the_usual_back_off(
    provider: Webhook, relay: respx.MockRouter
) -> None:
    relay.post(URL).respond(429, headers={"Retry-After": "soon"})
    assert failure(provider).retry_after is None


def test_gone_means_the_address_is_gone(provider: Webhook, relay: respx.MockRouter) -> None:
    relay.post(URL).respond(410, json={"error": "mailbox deleted"})
    raised = failure(provider)
    assert (raised.kind, raised.reason) == (
        "address_gone",
        'HTTP 410: {"error":"mailbox deleted"}',
    )


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_another_client_error_is_permanent_with_an_excerpt_of_the_answer(
    provider: Webhook, relay: respx.MockRouter, status: int
) -> None:
    relay.post(URL).respond(status, text="bad address " + "x" * 500)
    raised = failure(provider)
    assert raised.kind == "permanent"
    assert raised.reason.startswith(f"HTTP {status}: bad address xxx")
    assert raised.reason.endswith("...")
    assert len(raised.reason) < 230
