"""Postmark: the Email API request, how its answers (and ErrorCodes) are classified, and its
basic-auth webhooks."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

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
from workers.providers.email.postmark import Postmark

TOKEN = "server-token-0000"
USER, PASSWORD = "postmark", "hook-pass:with-colon"
UNSUBSCRIBE = "<https://lifeline.example/v1/unsubscribe/tok>"
MESSAGE = Outgoing(
    42,
    "email",
    "ada@example.com",
    {"subject": "Welcome", "html": "<p>Hi Ada ✓</p>", "text": "Hi Ada ✓"},
    {"List-Unsubscribe": UNSUBSCRIBE, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
)
MESSAGE_ID = "883953f4-6105-42a2-a16a-77a8eac79483"


@pytest.fixture
def settings() -> Settings:
    return Settings(email_from="Lifeline <noreply@lifeline.example>")


def adapter(settings: Settings, **options: str) -> Postmark:
    account = Account("postmark", "postmark", options, where="LIFELINE_POSTMARK_{KEY}")
    built = build_adapter(account, settings)
    assert isinstance(built, Postmark)
    return built


@pytest.fixture
def provider(settings: Settings, httpserver: HTTPServer) -> Postmark:
    return adapter(
        settings,
        server_token=TOKEN,
        base_url=httpserver.url_for("/"),
        webhook_user=USER,
        webhook_password=PASSWORD,
    )


def send_answered(httpserver: HTTPServer, provider: Postmark, response: Response) -> Any:
    httpserver.expect_oneshot_request("/email", method="POST").respond_with_response(response)
    return provider.send(MESSAGE)


def test_a_message_goes_out_with_our_id_and_the_unsubscribe_headers(
    httpserver: HTTPServer, provider: Postmark
) -> None:
    httpserver.expect_oneshot_request(
        "/email", method="POST", headers={"X-Postmark-Server-Token": TOKEN}
    ).respond_with_json(
        {
            "To": "ada@example.com",
            "SubmittedAt": "2023-11-14T22:13:20.0000000Z",
            "MessageID": MESSAGE_ID,
            "ErrorCode": 0,
            "Message": "OK",
        }
    )

    sent = provider.send(MESSAGE)

    assert sent.provider_message_id == MESSAGE_ID
    [(request, _)] = httpserver.log
    assert request.headers["Accept"] == "application/json"
    assert json.loads(request.data) == {
        "From": "Lifeline <noreply@lifeline.example>",
        "To": "ada@example.com",
        "Subject": "Welcome",
        "TextBody": "Hi Ada ✓",
        "HtmlBody": "<p>Hi Ada ✓</p>",
        "Headers": [
            {"Name": "List-Unsubscribe", "Value": UNSUBSCRIBE},
            {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
        ],
        "Metadata": {"lifeline_message_id": "42"},
        "MessageStream": "outbound",
    }


def test_a_marketing_account_sends_on_its_broadcast_stream(
    httpserver: HTTPServer, settings: Settings
) -> None:
    provider = adapter(
        settings,
        server_token=TOKEN,
        base_url=httpserver.url_for("/"),
        message_stream="broadcast",
        **{"from": "news@acme.example"},
    )
    send_answered(httpserver, provider, Response('{"MessageID": "x"}', 200))
    [(request, _)] = httpserver.log
    assert json.loads(request.data)["MessageStream"] == "broadcast"
    assert json.loads(request.data)["From"] == "news@acme.example"


def test_the_api_is_postmarks_unless_base_url_says_otherwise(settings: Settings) -> None:
    assert adapter(settings, server_token=TOKEN).url == "https://api.postmarkapp.com/email"
    proxied = adapter(settings, server_token=TOKEN, base_url="https://relay.example/pm/")
    assert proxied.url == "https://relay.example/pm/email"


def test_rate_limiting_is_retried_after_the_time_postmark_asks(
    httpserver: HTTPServer, provider: Postmark
) -> None:
    answer = Response('{"ErrorCode": 429, "Message": "Rate limit exceeded"}', 429)
    answer.headers["Retry-After"] = "12"
    with pytest.raises(ProviderError) as raised:
        send_answered(httpserver, provider, answer)
    assert (raised.value.kind, raised.value.retry_after) == ("retryable", 12.0)


def test_a_server_error_is_retried(httpserver: HTTPServer, provider: Postmark) -> None:
    with pytest.raises(ProviderError) as raised:
        send_answered(httpserver, provider, Response("Service Unavailable", 503))
    assert raised.value.kind == "retryable"


def test_an_inactive_recipient_is_an_address_gone(
    httpserver: HTTPServer, provider: Postmark
) -> None:
    body = {
        "ErrorCode": 406,
        "Message": "You tried to send to recipient(s) that have been marked as inactive.",
    }
    with pytest.raises(ProviderError) as raised:
        send_answered(httpserver, provider, Response(json.dumps(body), 422))
    assert raised.value.kind == "address_gone"
    assert "ErrorCode 406: You tried to send to recipient(s)" in raised.value.reason


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (422, 300, "Invalid 'From' address: 'x@y' is not a verified sender signature."),
        (422, 412, "Account is pending approval."),
        (401, 10, "Request does not contain a valid Server token."),
    ],
)
def test_a_refused_message_is_permanent_with_postmarks_reason(
    httpserver: HTTPServer, provider: Postmark, status: int, code: int, message: str
) -> None:
    body = json.dumps({"ErrorCode": code, "Message": message})
    with pytest.raises(ProviderError) as raised:
        send_answered(httpserver, provider, Response(body, status))
    assert raised.value.kind == "permanent"
    assert raised.value.reason == f"HTTP {status}: ErrorCode {code}: {message}"
    assert TOKEN not in raised.value.reason


def test_an_account_without_a_token_names_the_variable_to_set(settings: Settings) -> None:
    account = find_account("postmark", settings, environ={})
    with pytest.raises(ProviderConfigError, match="LIFELINE_POSTMARK_SERVER_TOKEN"):
        build_adapter(account, settings)


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"webhook_user": USER}, "LIFELINE_POSTMARK_WEBHOOK_PASSWORD"),
        ({"webhook_password": PASSWORD}, "LIFELINE_POSTMARK_WEBHOOK_USER"),
    ],
)
def test_half_a_pair_of_webhook_credentials_is_refused_at_start(
    settings: Settings, given: dict[str, str], missing: str
) -> None:
    with pytest.raises(ProviderConfigError, match=missing):
        adapter(settings, server_token=TOKEN, **given)


# --- Webhooks -------------------------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def inbound(record: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> Inbound:
    body = record if isinstance(record, bytes) else json.dumps(record).encode()
    return Inbound(
        "https://lifeline.example/v1/webhooks/postmark",
        {"content-type": "application/json", **(headers or {})},
        body,
    )


DELIVERY = {
    "RecordType": "Delivery",
    "ServerID": 23,
    "MessageStream": "outbound",
    "MessageID": MESSAGE_ID,
    "Recipient": "ada@example.com",
    "Tag": "",
    "DeliveredAt": "2023-11-14T22:13:20.9070259Z",
    "Details": "Test delivery webhook details",
    "Metadata": {"lifeline_message_id": "42"},
}


def test_the_configured_credentials_are_accepted(provider: Postmark) -> None:
    provider.verify_webhook(inbound(DELIVERY, basic(USER, PASSWORD)))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic(USER, "wrong"),
        basic("someone", PASSWORD),
        {"authorization": "Bearer " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()},
        {"authorization": "Basic %%%not-base64%%%"},
    ],
)
def test_other_credentials_are_rejected(provider: Postmark, headers: dict[str, str]) -> None:
    with pytest.raises(WebhookRejected):
        provider.verify_webhook(inbound(DELIVERY, headers))


def test_without_credentials_every_webhook_is_refused(settings: Settings) -> None:
    provider = adapter(settings, server_token=TOKEN)
    with pytest.raises(WebhookRejected) as raised:
        provider.verify_webhook(inbound(DELIVERY, basic("", "")))
    assert "LIFELINE_POSTMARK_WEBHOOK_USER" in str(raised.value)
    assert "LIFELINE_POSTMARK_WEBHOOK_PASSWORD" in str(raised.value)


def record(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "RecordType": kind,
        "MessageStream": "outbound",
        "MessageID": MESSAGE_ID,
        "Metadata": {"lifeline_message_id": "42"},
        **fields,
    }


AT = "2023-11-14T22:13:20Z"
WHEN = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)
BOUNCE = {
    "ID": 4323372036854775807,
    "Email": "ada@example.com",
    "BouncedAt": AT,
    "Description": "The server was unable to deliver your message.",
    "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
}


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (record("Delivery", Recipient="ada@example.com", DeliveredAt=AT), "delivered"),
        (record("Open", Recipient="ada@example.com", ReceivedAt=AT, FirstOpen=True), "opened"),
        (
            record(
                "Click",
                Recipient="ada@example.com",
                ReceivedAt=AT,
                OriginalLink="https://acme.example/pricing",
            ),
            "clicked",
        ),
        (record("Bounce", Type="HardBounce", TypeCode=1, **BOUNCE), "bounced"),
        (record("Bounce", Type="BadEmailAddress", TypeCode=100000, **BOUNCE), "bounced"),
        (record("Bounce", Type="ManuallyDeactivated", TypeCode=100002, **BOUNCE), "bounced"),
        (record("Bounce", Type="Blocked", TypeCode=100006, **BOUNCE), "failed"),
        (record("SpamComplaint", Type="SpamComplaint", TypeCode=512, **BOUNCE), "complained"),
        (
            record(
                "SubscriptionChange",
                Recipient="ada@example.com",
                ChangedAt=AT,
                Origin="Recipient",
                SuppressSending=True,
                SuppressionReason="ManualSuppression",
            ),
            "unsubscribed",
        ),
    ],
)
def test_each_result_becomes_a_report_naming_our_message(
    provider: Postmark, payload: dict[str, Any], status: str
) -> None:
    [report] = provider.parse_webhook(inbound(payload)).reports
    assert (report.status, report.message_id, report.provider_message_id) == (
        status,
        42,
        MESSAGE_ID,
    )
    assert (report.address, report.at) == ("ada@example.com", WHEN)
    assert report.event_id.startswith(payload["RecordType"] + ":")


def test_a_click_names_the_link_and_a_bounce_what_the_server_said(provider: Postmark) -> None:
    click = record("Click", ReceivedAt=AT, OriginalLink="https://acme.example/pricing")
    assert provider.parse_webhook(inbound(click)).reports[0].url == "https://acme.example/pricing"
    bounce = record("Bounce", Type="HardBounce", **BOUNCE)
    assert provider.parse_webhook(inbound(bounce)).reports[0].detail == BOUNCE["Details"]


def test_a_suppression_after_a_bounce_or_complaint_is_reported_as_that(
    provider: Postmark,
) -> None:
    def change(reason: str) -> dict[str, Any]:
        return record(
            "SubscriptionChange",
            Recipient="ada@example.com",
            ChangedAt=AT,
            SuppressSending=True,
            SuppressionReason=reason,
        )

    statuses = [
        provider.parse_webhook(inbound(change(reason))).reports[0].status
        for reason in ("HardBounce", "SpamComplaint", "ManualSuppression")
    ]
    assert statuses == ["bounced", "complained", "unsubscribed"]


def test_a_retried_webhook_is_the_same_event_and_a_second_open_is_a_new_one(
    provider: Postmark,
) -> None:
    first = record("Open", Recipient="ada@example.com", ReceivedAt=AT)
    again = record("Open", Recipient="ada@example.com", ReceivedAt=AT)
    later = record("Open", Recipient="ada@example.com", ReceivedAt="2023-11-15T08:00:00Z")
    other_link = record("Click", Recipient="ada@example.com", ReceivedAt=AT, OriginalLink="b")
    link = record("Click", Recipient="ada@example.com", ReceivedAt=AT, OriginalLink="a")

    ids = [provider.parse_webhook(inbound(r)).reports[0].event_id for r in (first, again, later)]
    assert ids[0] == ids[1] != ids[2]
    clicks = [provider.parse_webhook(inbound(r)).reports[0].event_id for r in (link, other_link)]
    assert clicks[0] != clicks[1]


@pytest.mark.parametrize(
    "payload",
    [
        record("Bounce", Type="SoftBounce", TypeCode=4096, **BOUNCE),
        record("Bounce", Type="Transient", TypeCode=2, **BOUNCE),
        record("Bounce", Type="AutoResponder", TypeCode=64, **BOUNCE),
        record("SubscriptionChange", ChangedAt=AT, SuppressSending=False),
        record("Inbound", ReceivedAt=AT),
        record("SomethingNew"),
    ],
)
def test_what_is_not_a_result_is_ignored(provider: Postmark, payload: dict[str, Any]) -> None:
    assert provider.parse_webhook(inbound(payload)).reports == []


def test_a_record_without_our_metadata_still_names_postmarks_message(provider: Postmark) -> None:
    payload = record("Delivery", DeliveredAt=AT) | {"Metadata": {}}
    [report] = provider.parse_webhook(inbound(payload)).reports
    assert (report.message_id, report.provider_message_id) == (None, MESSAGE_ID)


@pytest.mark.parametrize("body", [b"", b"<xml/>", b"[]", b'{"MessageID": "x"}', b"\xff"])
def test_a_body_that_is_not_a_postmark_record_is_a_value_error(
    provider: Postmark, body: bytes
) -> None:
    with pytest.raises(ValueError):
        provider.parse_webhook(inbound(body))
