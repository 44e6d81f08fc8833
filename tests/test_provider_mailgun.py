"""Mailgun: the Messages API request, how its answers are classified, and its signed
webhooks."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from service.delivery.accounts import find_account
from service.delivery.providers import (
    Account,
    Inbound,
    Outgoing,
    ProviderConfigError,
    ProviderError,
    WebhookRejected,
    build_adapter,
)
from service.kit.settings import Settings
from workers.providers.email.mailgun import Mailgun

API_KEY = "key-test-0123456789"
DOMAIN = "mg.acme.example"
SIGNING_KEY = "whsec-mailgun-test"
UNSUBSCRIBE = "<https://lifeline.example/v1/unsubscribe/tok>"
MESSAGE = Outgoing(
    42,
    "email",
    "ada@example.com",
    {"subject": "Welcome", "html": "<p>Hi Ada ✓</p>", "text": "Hi Ada ✓"},
    {"List-Unsubscribe": UNSUBSCRIBE, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
)
PATH = f"/v3/{DOMAIN}/messages"


@pytest.fixture
def settings() -> Settings:
    return Settings(email_from="Lifeline <noreply@lifeline.example>")


def adapter(settings: Settings, **options: str) -> Mailgun:
    account = Account("mailgun", "mailgun", options, where="LIFELINE_MAILGUN_{KEY}")
    built = build_adapter(account, settings)
    assert isinstance(built, Mailgun)
    return built


@pytest.fixture
def provider(settings: Settings, httpserver: HTTPServer) -> Mailgun:
    return adapter(
        settings,
        api_key=API_KEY,
        domain=DOMAIN,
        base_url=httpserver.url_for("/"),
        webhook_signing_key=SIGNING_KEY,
    )


def send_answered(httpserver: HTTPServer, provider: Mailgun, response: Response) -> Any:
    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_response(response)
    return provider.send(MESSAGE)


def test_a_message_goes_out_with_our_id_and_the_unsubscribe_headers(
    httpserver: HTTPServer, provider: Mailgun
) -> None:
    basic = base64.b64encode(f"api:{API_KEY}".encode()).decode()
    httpserver.expect_oneshot_request(
        PATH, method="POST", headers={"Authorization": f"Basic {basic}"}
    ).respond_with_json({"id": "<20231114221320.1.ABC@mg.acme.example>", "message": "Queued."})

    sent = provider.send(MESSAGE)

    assert sent.provider_message_id == "20231114221320.1.ABC@mg.acme.example"
    [(request, _)] = httpserver.log
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(request.get_data(as_text=True), strict_parsing=True)) == {
        "from": "Lifeline <noreply@lifeline.example>",
        "to": "ada@example.com",
        "subject": "Welcome",
        "text": "Hi Ada ✓",
        "html": "<p>Hi Ada ✓</p>",
        "v:lifeline_message_id": "42",
        "h:List-Unsubscribe": UNSUBSCRIBE,
        "h:List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_the_api_is_mailguns_us_region_unless_base_url_says_otherwise(
    settings: Settings,
) -> None:
    us = adapter(settings, api_key=API_KEY, domain=DOMAIN)
    assert us.url == f"https://api.mailgun.net/v3/{DOMAIN}/messages"
    eu = adapter(settings, api_key=API_KEY, domain=DOMAIN, base_url="https://api.eu.mailgun.net")
    assert eu.url == f"https://api.eu.mailgun.net/v3/{DOMAIN}/messages"


def test_rate_limiting_is_retried_after_the_time_mailgun_asks(
    httpserver: HTTPServer, provider: Mailgun
) -> None:
    with pytest.raises(ProviderError) as raised:
        send_answered(
            httpserver, provider, Response("Too many requests", 429, {"Retry-After": "7"})
        )
    assert (raised.value.kind, raised.value.retry_after) == ("retryable", 7.0)


def test_a_server_error_is_retried(httpserver: HTTPServer, provider: Mailgun) -> None:
    with pytest.raises(ProviderError) as raised:
        send_answered(httpserver, provider, Response("Internal Server Error", 500))
    assert raised.value.kind == "retryable"


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (400, '{"message": "to parameter is not a valid address"}', "to parameter is not a"),
        (401, "Forbidden", "Forbidden"),
        (404, '{"message": "Domain not found: mg.acme.example"}', "Domain not found"),
    ],
)
def test_a_refused_message_is_permanent_with_mailguns_reason(
    httpserver: HTTPServer, provider: Mailgun, status: int, body: str, reason: str
) -> None:
    with pytest.raises(ProviderError) as raised:
        send_answered(httpserver, provider, Response(body, status))
    assert raised.value.kind == "permanent"
    assert raised.value.reason.startswith(f"HTTP {status}: {reason}")
    assert API_KEY not in raised.value.reason


@pytest.mark.parametrize(
    ("options", "variable"),
    [({}, "LIFELINE_MAILGUN_API_KEY"), ({"api_key": API_KEY}, "LIFELINE_MAILGUN_DOMAIN")],
)
def test_an_account_without_credentials_names_the_variable_to_set(
    settings: Settings, options: dict[str, str], variable: str
) -> None:
    environ = {f"LIFELINE_MAILGUN_{key.upper()}": value for key, value in options.items()}
    account = find_account("mailgun", settings, environ=environ)
    with pytest.raises(ProviderConfigError, match=variable):
        build_adapter(account, settings)


# --- Webhooks -------------------------------------------------------------------------------


def signature_block(key: str = SIGNING_KEY, at: float | None = None) -> dict[str, str]:
    """What Mailgun signs: the hex HMAC-SHA256 of timestamp + token."""
    timestamp = str(int(time.time() if at is None else at))
    token = secrets.token_hex(25)
    digest = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": timestamp, "token": token, "signature": digest}


def event_data(
    kind: str, event_id: str = "czsjqFATSlC3QtAK-C80nw", **fields: Any
) -> dict[str, Any]:
    return {
        "event": kind,
        "id": event_id,
        "timestamp": 1700000000.25,
        "recipient": "ada@example.com",
        "user-variables": {"lifeline_message_id": "42"},
        "message": {"headers": {"message-id": "20231114221320.1.ABC@mg.acme.example"}},
        **fields,
    }


def inbound(body: bytes) -> Inbound:
    return Inbound(
        "https://lifeline.example/v1/webhooks/mailgun", {"content-type": "application/json"}, body
    )


def webhook(data: dict[str, Any], signature: dict[str, str] | None = None) -> Inbound:
    block = signature_block() if signature is None else signature
    return inbound(json.dumps({"signature": block, "event-data": data}).encode())


def test_a_signed_webhook_is_accepted(provider: Mailgun) -> None:
    provider.verify_webhook(webhook(event_data("delivered")))


def test_a_signature_under_another_key_is_rejected(provider: Mailgun) -> None:
    with pytest.raises(WebhookRejected, match="does not match"):
        provider.verify_webhook(webhook(event_data("delivered"), signature_block("other-key")))


def test_a_token_swapped_into_a_captured_signature_is_rejected(provider: Mailgun) -> None:
    block = signature_block() | {"token": secrets.token_hex(25)}
    with pytest.raises(WebhookRejected, match="does not match"):
        provider.verify_webhook(webhook(event_data("delivered"), block))


def test_a_replayed_old_capture_is_rejected(provider: Mailgun) -> None:
    old = signature_block(at=time.time() - 11 * 60)
    with pytest.raises(WebhookRejected, match="too old"):
        provider.verify_webhook(webhook(event_data("delivered"), old))


def test_a_captured_signature_cannot_carry_a_second_body(provider: Mailgun) -> None:
    block = signature_block()
    provider.verify_webhook(webhook(event_data("delivered"), block))
    forged = event_data("complained", event_id="forged")
    with pytest.raises(WebhookRejected, match="the Mailgun token was already used"):
        provider.verify_webhook(webhook(forged, block))
    provider.verify_webhook(webhook(forged))  # a fresh token is still fine


def test_tokens_are_forgotten_once_their_timestamp_is_outside_the_tolerance(
    provider: Mailgun, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    for _ in range(50):
        provider.verify_webhook(webhook(event_data("delivered")))
    later = now + 11 * 60
    monkeypatch.setattr(time, "time", lambda: later)
    provider.verify_webhook(webhook(event_data("delivered"), signature_block(at=later)))
    assert len(provider._tokens) == 1


def test_concurrent_replays_of_one_token_are_accepted_once(provider: Mailgun) -> None:
    block = signature_block()
    barrier = threading.Barrier(8)

    def attempt() -> bool:
        barrier.wait()
        try:
            provider.verify_webhook(webhook(event_data("delivered"), block))
        except WebhookRejected:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: attempt(), range(8)))
    assert outcomes.count(True) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        json.dumps({"event-data": event_data("delivered")}).encode(),
        json.dumps({"signature": {"timestamp": "1", "token": "t"}}).encode(),
        json.dumps({"signature": {"timestamp": 1, "token": "t", "signature": "s"}}).encode(),
        json.dumps([1, 2]).encode(),
    ],
)
def test_a_webhook_without_a_whole_signature_is_rejected(provider: Mailgun, body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        provider.verify_webhook(inbound(body))


def test_without_a_signing_key_every_webhook_is_refused(settings: Settings) -> None:
    provider = adapter(settings, api_key=API_KEY, domain=DOMAIN)
    with pytest.raises(WebhookRejected, match="LIFELINE_MAILGUN_WEBHOOK_SIGNING_KEY"):
        provider.verify_webhook(webhook(event_data("delivered")))


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (event_data("delivered"), "delivered"),
        (event_data("opened"), "opened"),
        (event_data("clicked", url="https://acme.example/pricing"), "clicked"),
        (event_data("failed", severity="permanent", reason="bounce"), "bounced"),
        (event_data("complained"), "complained"),
        (event_data("unsubscribed"), "unsubscribed"),
    ],
)
def test_each_result_becomes_a_report_naming_our_message(
    provider: Mailgun, data: dict[str, Any], status: str
) -> None:
    [report] = provider.parse_webhook(webhook(data)).reports
    assert (report.event_id, report.status, report.message_id) == (
        "czsjqFATSlC3QtAK-C80nw",
        status,
        42,
    )
    assert report.provider_message_id == "20231114221320.1.ABC@mg.acme.example"
    assert report.address == "ada@example.com"
    assert report.at == dt.datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=dt.UTC)


def test_a_click_names_the_link_and_a_bounce_what_the_server_said(provider: Mailgun) -> None:
    click = event_data("clicked", url="https://acme.example/pricing")
    assert provider.parse_webhook(webhook(click)).reports[0].url == "https://acme.example/pricing"
    bounce = event_data("failed", severity="permanent", reason="bounce")
    bounce["delivery-status"] = {
        "code": 550,
        "description": "5.1.1 The email account does not exist",
    }
    [report] = provider.parse_webhook(webhook(bounce)).reports
    assert report.detail == "5.1.1 The email account does not exist"


def test_a_number_mailgun_made_of_our_id_still_names_the_message(provider: Mailgun) -> None:
    data = event_data("delivered") | {"user-variables": {"lifeline_message_id": 42}}
    assert provider.parse_webhook(webhook(data)).reports[0].message_id == 42


@pytest.mark.parametrize(
    "data",
    [
        event_data("failed", severity="temporary", reason="generic"),
        event_data("accepted"),
        event_data("something-new"),
        event_data("delivered", event_id=""),
    ],
)
def test_what_is_not_a_result_is_ignored(provider: Mailgun, data: dict[str, Any]) -> None:
    assert provider.parse_webhook(webhook(data)).reports == []


@pytest.mark.parametrize(
    "body", [b"", b"<xml/>", b"[]", b'{"signature": {}}', b'{"event-data": "x"}', b"\xff"]
)
def test_a_body_that_is_not_a_mailgun_event_is_a_value_error(
    provider: Mailgun, body: bytes
) -> None:
    with pytest.raises(ValueError):
        provider.parse_webhook(inbound(body))
