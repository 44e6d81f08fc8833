"""SendGrid: the Mail Send request, how its answers are classified, and the signed Event
Webhook, checked against SendGrid's own verification helper."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pytest_httpserver import HTTPServer
from sendgrid.helpers.eventwebhook import EventWebhook
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
from workers.providers.email.sendgrid import SendGrid

API_KEY = "SG.test-key"
UNSUBSCRIBE = "<https://lifeline.example/v1/unsubscribe/tok>"
MESSAGE = Outgoing(
    42,
    "email",
    "ada@example.com",
    {"subject": "Welcome", "html": "<p>Hi Ada ✓</p>", "text": "Hi Ada ✓"},
    {"List-Unsubscribe": UNSUBSCRIBE, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
)
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


@pytest.fixture
def settings() -> Settings:
    return Settings(email_from="Lifeline <noreply@lifeline.example>")


@pytest.fixture
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def public_key(signing_key: ec.EllipticCurvePrivateKey) -> str:
    """The verification key as SendGrid's settings page shows it: base64 of the DER key."""
    der = signing_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def adapter(settings: Settings, **options: str) -> SendGrid:
    account = Account("sendgrid", "sendgrid", options, where="LIFELINE_SENDGRID_{KEY}")
    built = build_adapter(account, settings)
    assert isinstance(built, SendGrid)
    return built


@pytest.fixture
def provider(settings: Settings, httpserver: HTTPServer, public_key: str) -> SendGrid:
    return adapter(
        settings,
        api_key=API_KEY,
        base_url=httpserver.url_for("/"),
        webhook_public_key=public_key,
    )


def send_answered(httpserver: HTTPServer, provider: SendGrid, response: Response) -> Any:
    httpserver.expect_oneshot_request("/v3/mail/send", method="POST").respond_with_response(
        response
    )
    return provider.send(MESSAGE)


def test_a_message_goes_out_with_our_id_and_the_unsubscribe_headers(
    httpserver: HTTPServer, provider: SendGrid
) -> None:
    httpserver.expect_oneshot_request(
        "/v3/mail/send", method="POST", headers={"Authorization": f"Bearer {API_KEY}"}
    ).respond_with_data("", status=202, headers={"X-Message-Id": "14c5d75ce93.dfd.64b469"})

    sent = provider.send(MESSAGE)

    assert sent.provider_message_id == "14c5d75ce93.dfd.64b469"
    [(request, _)] = httpserver.log
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.data) == {
        "personalizations": [
            {"to": [{"email": "ada@example.com"}], "custom_args": {"lifeline_message_id": "42"}}
        ],
        "from": {"email": "noreply@lifeline.example", "name": "Lifeline"},
        "subject": "Welcome",
        "content": [
            {"type": "text/plain", "value": "Hi Ada ✓"},
            {"type": "text/html", "value": "<p>Hi Ada ✓</p>"},
        ],
        "headers": {
            "List-Unsubscribe": UNSUBSCRIBE,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }


def test_the_account_sender_wins_over_the_default(
    httpserver: HTTPServer, settings: Settings
) -> None:
    provider = adapter(
        settings, api_key=API_KEY, base_url=httpserver.url_for("/"), **{"from": "ops@acme.example"}
    )
    send_answered(httpserver, provider, Response("", status=202))
    [(request, _)] = httpserver.log
    assert json.loads(request.data)["from"] == {"email": "ops@acme.example"}


def test_the_api_is_sendgrid_unless_base_url_says_otherwise(settings: Settings) -> None:
    assert adapter(settings, api_key=API_KEY).url == "https://api.sendgrid.com/v3/mail/send"
    regional = adapter(settings, api_key=API_KEY, base_url="https://api.eu.sendgrid.com/")
    assert regional.url == "https://api.eu.sendgrid.com/v3/mail/send"


def test_rate_limiting_is_retried_after_the_time_sendgrid_asks(
    httpserver: HTTPServer, provider: SendGrid
) -> None:
    answer = Response('{"errors":[{"message":"too many requests"}]}', 429, {"Retry-After": "30"})
    with pytest.raises(ProviderError) as raised:
        send_answered(httpserver, provider, answer)
    assert (raised.value.kind, raised.value.retry_after) == ("retryable", 30.0)


def test_a_server_error_is_retried(httpserver: HTTPServer, provider: SendGrid) -> None:
    with pytest.raises(ProviderError) as raised:
        send_answered(httpserver, provider, Response("upstream unavailable", 503))
    assert raised.value.kind == "retryable"


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_a_refused_message_is_permanent_with_sendgrids_reason(
    httpserver: HTTPServer, provider: SendGrid, status: int
) -> None:
    body = {
        "errors": [
            {"message": "Does not contain a valid address.", "field": "from.email"},
            {"message": "The subject is required.", "field": "subject"},
        ]
    }
    with pytest.raises(ProviderError) as raised:
        send_answered(httpserver, provider, Response(json.dumps(body), status))
    assert raised.value.kind == "permanent"
    assert raised.value.reason == (
        f"HTTP {status}: Does not contain a valid address. (from.email); "
        "The subject is required. (subject)"
    )
    assert API_KEY not in raised.value.reason


def test_an_account_without_an_api_key_names_the_variable_to_set(settings: Settings) -> None:
    account = find_account("sendgrid", settings, environ={})
    with pytest.raises(ProviderConfigError, match="LIFELINE_SENDGRID_API_KEY"):
        build_adapter(account, settings)


def test_a_verification_key_that_is_not_one_is_refused_at_start(settings: Settings) -> None:
    with pytest.raises(ProviderConfigError, match="webhook_public_key"):
        adapter(settings, api_key=API_KEY, webhook_public_key="bm90IGEga2V5")


# --- Event Webhook --------------------------------------------------------------------------


def signed(key: ec.EllipticCurvePrivateKey, body: bytes, at: float | None = None) -> dict[str, str]:
    """Headers as SendGrid sends them: ECDSA over the timestamp followed by the body."""
    timestamp = str(int(time.time() if at is None else at))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE.lower(): base64.b64encode(signature).decode(), TIMESTAMP.lower(): timestamp}


def inbound(body: bytes, headers: dict[str, str] | None = None) -> Inbound:
    return Inbound("https://lifeline.example/v1/webhooks/sendgrid", headers or {}, body)


BATCH = [
    {
        "email": "ada@example.com",
        "timestamp": 1700000000,
        "event": "delivered",
        "sg_event_id": "ZGVsaXZlcmVkLTA",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "response": "250 OK",
        "lifeline_message_id": "42",
    },
    {
        "email": "ada@example.com",
        "timestamp": 1700000060,
        "event": "open",
        "sg_event_id": "b3Blbi0x",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "lifeline_message_id": "42",
    },
]


def test_a_signed_batch_passes_sendgrids_own_check_and_ours(
    provider: SendGrid, signing_key: ec.EllipticCurvePrivateKey, public_key: str
) -> None:
    body = json.dumps(BATCH).encode()
    headers = signed(signing_key, body)

    independent = EventWebhook(public_key)
    assert independent.verify_signature(
        body.decode(), headers[SIGNATURE.lower()], headers[TIMESTAMP.lower()]
    )
    provider.verify_webhook(inbound(body, headers))


def test_a_tampered_body_is_rejected(
    provider: SendGrid, signing_key: ec.EllipticCurvePrivateKey, public_key: str
) -> None:
    body = json.dumps(BATCH).encode()
    headers = signed(signing_key, body)
    tampered = body.replace(b'"open"', b'"spamreport"')

    assert not EventWebhook(public_key).verify_signature(
        tampered.decode(), headers[SIGNATURE.lower()], headers[TIMESTAMP.lower()]
    )
    with pytest.raises(WebhookRejected):
        provider.verify_webhook(inbound(tampered, headers))


def test_a_replayed_old_capture_is_rejected_though_its_signature_is_good(
    provider: SendGrid, signing_key: ec.EllipticCurvePrivateKey, public_key: str
) -> None:
    body = json.dumps(BATCH).encode()
    headers = signed(signing_key, body, at=time.time() - 11 * 60)

    assert EventWebhook(public_key).verify_signature(
        body.decode(), headers[SIGNATURE.lower()], headers[TIMESTAMP.lower()]
    )
    with pytest.raises(WebhookRejected, match="too old"):
        provider.verify_webhook(inbound(body, headers))


def test_the_tolerance_is_an_option(
    settings: Settings, signing_key: ec.EllipticCurvePrivateKey, public_key: str
) -> None:
    provider = adapter(
        settings, api_key=API_KEY, webhook_public_key=public_key, webhook_tolerance_seconds="900"
    )
    body = json.dumps(BATCH).encode()
    provider.verify_webhook(inbound(body, signed(signing_key, body, at=time.time() - 11 * 60)))


@pytest.mark.parametrize("missing", [SIGNATURE.lower(), TIMESTAMP.lower()])
def test_a_request_without_the_signature_headers_is_rejected(
    provider: SendGrid, signing_key: ec.EllipticCurvePrivateKey, missing: str
) -> None:
    body = json.dumps(BATCH).encode()
    headers = signed(signing_key, body)
    del headers[missing]
    with pytest.raises(WebhookRejected):
        provider.verify_webhook(inbound(body, headers))


@pytest.mark.parametrize("signature", ["bm90IGEgc2lnbmF0dXJl", "%%%not base64%%%"])
def test_a_signature_that_is_not_one_is_rejected(provider: SendGrid, signature: str) -> None:
    body = json.dumps(BATCH).encode()
    headers = {SIGNATURE.lower(): signature, TIMESTAMP.lower(): str(int(time.time()))}
    with pytest.raises(WebhookRejected):
        provider.verify_webhook(inbound(body, headers))


def test_a_signature_by_another_key_is_rejected(provider: SendGrid) -> None:
    body = json.dumps(BATCH).encode()
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(WebhookRejected):
        provider.verify_webhook(inbound(body, signed(other, body)))


def test_without_a_verification_key_every_webhook_is_refused(
    settings: Settings, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    provider = adapter(settings, api_key=API_KEY)
    body = json.dumps(BATCH).encode()
    with pytest.raises(WebhookRejected, match="LIFELINE_SENDGRID_WEBHOOK_PUBLIC_KEY"):
        provider.verify_webhook(inbound(body, signed(signing_key, body)))


def event(kind: str, event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "email": "ada@example.com",
        "timestamp": 1700000000,
        "event": kind,
        "sg_event_id": event_id,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "lifeline_message_id": "42",
        **fields,
    }


def test_each_result_in_a_batch_becomes_a_report(provider: SendGrid) -> None:
    batch = [
        event("processed", "e0"),
        event("delivered", "e1", response="250 OK"),
        event("deferred", "e2", response="451 try later"),
        event("open", "e3"),
        event("click", "e4", url="https://acme.example/pricing"),
        event("bounce", "e5", type="bounce", reason="550 5.1.1 no such user"),
        event("bounce", "e6", type="blocked", reason="554 blocked by policy"),
        event("dropped", "e7", reason="Bounced Address"),
        event("spamreport", "e8"),
        event("unsubscribe", "e9"),
        event("group_unsubscribe", "e10", asm_group_id=3),
        event("group_resubscribe", "e11"),
        event("something_new", "e12"),
    ]
    reports = provider.parse_webhook(inbound(json.dumps(batch).encode())).reports

    assert [(r.event_id, r.status) for r in reports] == [
        ("e1", "delivered"),
        ("e3", "opened"),
        ("e4", "clicked"),
        ("e5", "bounced"),
        ("e6", "failed"),
        ("e7", "failed"),
        ("e8", "complained"),
        ("e9", "unsubscribed"),
        ("e10", "unsubscribed"),
    ]
    assert {(r.message_id, r.provider_message_id, r.address) for r in reports} == {
        (42, "14c5d75ce93", "ada@example.com")
    }
    assert all(r.at == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC) for r in reports)
    by_id = {r.event_id: r for r in reports}
    assert by_id["e4"].url == "https://acme.example/pricing"
    assert by_id["e5"].detail == "550 5.1.1 no such user"
    assert by_id["e7"].detail == "Bounced Address"


def test_one_unreadable_event_does_not_lose_the_rest(provider: SendGrid) -> None:
    batch = [
        "not an event",
        event("delivered", ""),
        {"event": "delivered"},
        event("delivered", "good", lifeline_message_id="not-ours"),
    ]
    [report] = provider.parse_webhook(inbound(json.dumps(batch).encode())).reports
    assert (report.event_id, report.message_id, report.provider_message_id) == (
        "good",
        None,
        "14c5d75ce93",
    )


@pytest.mark.parametrize("body", [b"", b"<xml/>", b'{"event": "delivered"}', b"\xff\xfe"])
def test_a_body_that_is_not_an_event_batch_is_a_value_error(
    provider: SendGrid, body: bytes
) -> None:
    with pytest.raises(ValueError):
        provider.parse_webhook(inbound(body))
