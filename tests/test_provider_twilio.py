"""Twilio: the Messages API request, how Twilio's errors are classified, and status callbacks
verified against Twilio's own signature code (twilio.request_validator)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

import pytest
from pytest_httpserver import HTTPServer
from twilio.request_validator import RequestValidator

from service.delivery.accounts import find_account
from service.delivery.providers import (
    Account,
    Inbound,
    Outgoing,
    ProviderConfigError,
    ProviderError,
    WebhookReceiver,
    WebhookRejected,
    build_adapter,
)
from service.kit.settings import Settings
from workers.providers.sms.twilio import Twilio

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "twilio-test-auth-token"
PATH = f"/2010-04-01/Accounts/{SID}/Messages.json"
PUBLIC = "https://lifeline.example"
CALLBACK = f"{PUBLIC}/v1/webhooks/twilio-us?lifeline_message_id=42"
MESSAGE = Outgoing(42, "sms", "+14155550100", {"body": "Your code is 1234 ✓"})


def adapter(httpserver: HTTPServer | None = None, **options: str) -> Twilio:
    defaults = {"account_sid": SID, "auth_token": TOKEN, "from": "+14155550199"}
    if httpserver is not None:
        defaults["base_url"] = httpserver.url_for("/")
    account = Account("twilio-us", "twilio", {**defaults, **options})
    built = build_adapter(account, Settings(public_url=PUBLIC + "/"))
    assert isinstance(built, Twilio)
    return built


def failure(provider: Twilio) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        provider.send(MESSAGE)
    return raised.value


def test_sends_the_form_twilio_documents_with_basic_auth_and_our_status_callback(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        {"sid": "SM0123", "status": "queued"}, status=201
    )
    provider = adapter(httpserver)

    sent = provider.send(MESSAGE)

    assert sent.provider_message_id == "SM0123"
    assert (provider.channel, provider.idempotent) == ("sms", False)
    request, _ = httpserver.log[0]
    assert request.authorization is not None
    assert (request.authorization.username, request.authorization.password) == (SID, TOKEN)
    assert request.content_type == "application/x-www-form-urlencoded"
    assert request.form.to_dict() == {
        "To": "+14155550100",
        "From": "+14155550199",
        "Body": "Your code is 1234 ✓",
        "StatusCallback": CALLBACK,
    }


def test_a_messaging_service_can_stand_in_for_the_sender(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_json({"sid": "SM1"}, status=201)
    adapter(httpserver, **{"from": "", "messaging_service_sid": "MG42"}).send(MESSAGE)
    form = httpserver.log[0][0].form
    assert form["MessagingServiceSid"] == "MG42"
    assert "From" not in form


def twilio_error(httpserver: HTTPServer, status: int, code: int, text: str) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        {"code": code, "message": text, "status": status}, status=status
    )


def test_a_recipient_who_replied_stop_is_gone(httpserver: HTTPServer) -> None:
    twilio_error(httpserver, 400, 21610, "Attempt to send to unsubscribed recipient")
    error = failure(adapter(httpserver))
    assert error.kind == "address_gone"
    assert "21610" in error.reason


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (21211, "The 'To' number +1415555 is not a valid phone number."),
        (21614, "'To' number is not a valid mobile number"),
        (20003, "Authenticate"),
    ],
)
def test_other_twilio_errors_are_permanent_with_twilios_code_and_message(
    httpserver: HTTPServer, code: int, text: str
) -> None:
    twilio_error(httpserver, 400 if code != 20003 else 401, code, text)
    error = failure(adapter(httpserver))
    assert error.kind == "permanent"
    assert f"Twilio error {code}: {text}" in error.reason


def test_too_many_requests_is_retried_after_what_twilio_asks(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        {"code": 20429, "message": "Too Many Requests"}, status=429, headers={"Retry-After": "7"}
    )
    error = failure(adapter(httpserver))
    assert (error.kind, error.retry_after) == ("retryable", 7.0)


def test_a_server_error_is_retryable(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("upstream down", status=500)
    error = failure(adapter(httpserver))
    assert error.kind == "retryable"
    assert "upstream down" in error.reason


def test_missing_options_name_the_environment_variables_to_set() -> None:
    settings = Settings()
    environ = {"LIFELINE_TWILIO_ACCOUNT_SID": SID}
    with pytest.raises(ProviderConfigError, match="LIFELINE_TWILIO_AUTH_TOKEN"):
        build_adapter(find_account("twilio", settings, environ), settings)
    environ["LIFELINE_TWILIO_AUTH_TOKEN"] = TOKEN
    with pytest.raises(ProviderConfigError) as raised:
        build_adapter(find_account("twilio", settings, environ), settings)
    assert "LIFELINE_TWILIO_FROM" in str(raised.value)
    assert "LIFELINE_TWILIO_MESSAGING_SERVICE_SID" in str(raised.value)
    assert TOKEN not in str(raised.value)


# --- Status callbacks --------------------------------------------------------------------------

DELIVERED = {
    "AccountSid": SID,
    "ApiVersion": "2010-04-01",
    "From": "+14155550199",
    "MessageSid": "SM0123",
    "MessageStatus": "delivered",
    "SmsSid": "SM0123",
    "SmsStatus": "delivered",
    "To": "+14155550100",
}


def callback(params: dict[str, str], url: str = CALLBACK, signed_url: str | None = None) -> Inbound:
    signature = RequestValidator(TOKEN).compute_signature(signed_url or url, params)
    return Inbound(
        url=url,
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": signature,
        },
        body=urlencode(params).encode(),
    )


def test_accepts_a_callback_signed_as_twilio_signs_it() -> None:
    provider = adapter()
    assert isinstance(provider, WebhookReceiver)
    provider.verify_webhook(callback(DELIVERED))
    provider.verify_webhook(callback({**DELIVERED, "Body": "a b&c=d ü"}))


def test_accepts_the_signature_with_or_without_the_default_port() -> None:
    with_port = CALLBACK.replace("lifeline.example", "lifeline.example:443")
    adapter().verify_webhook(callback(DELIVERED, url=with_port, signed_url=CALLBACK))
    adapter().verify_webhook(callback(DELIVERED, url=CALLBACK, signed_url=with_port))


def test_rejects_a_tampered_parameter_another_url_a_wrong_token_or_no_signature() -> None:
    provider = adapter()
    genuine = callback(DELIVERED)
    tampered = Inbound(
        genuine.url, genuine.headers, genuine.body.replace(b"delivered", b"undelivered", 1)
    )
    moved = Inbound(CALLBACK.replace("=42", "=43"), genuine.headers, genuine.body)
    unsigned = Inbound(genuine.url, {"content-type": "x"}, genuine.body)
    forged = Inbound(
        genuine.url,
        {"x-twilio-signature": RequestValidator("other").compute_signature(CALLBACK, DELIVERED)},
        genuine.body,
    )
    for request in (tampered, moved, unsigned, forged):
        with pytest.raises(WebhookRejected):
            provider.verify_webhook(request)


def test_delivered_names_our_message_and_twilios() -> None:
    before = dt.datetime.now(dt.UTC)
    [report] = adapter().parse_webhook(callback(DELIVERED)).reports
    assert (report.status, report.message_id, report.provider_message_id) == (
        "delivered",
        42,
        "SM0123",
    )
    assert report.event_id == "SM0123:delivered"
    assert report.address == "+14155550100"
    assert report.at >= before


@pytest.mark.parametrize(
    ("status", "code", "expected", "detail"),
    [
        ("undelivered", "30003", "failed", "undelivered: Twilio error 30003 (unreachable"),
        ("undelivered", "30005", "failed", "Twilio error 30005 (unknown destination"),
        ("failed", "30006", "failed", "failed: Twilio error 30006 (landline"),
        ("failed", "21610", "unsubscribed", "Twilio error 21610"),
    ],
)
def test_undelivered_and_failed_carry_twilios_error_code(
    status: str, code: str, expected: str, detail: str
) -> None:
    params = {**DELIVERED, "MessageStatus": status, "SmsStatus": status, "ErrorCode": code}
    [report] = adapter().parse_webhook(callback(params)).reports
    assert report.status == expected
    assert report.detail is not None and detail in report.detail
    assert report.event_id == f"SM0123:{status}"


@pytest.mark.parametrize("status", ["queued", "accepted", "sending", "sent"])
def test_progress_statuses_are_not_reports(status: str) -> None:
    params = {**DELIVERED, "MessageStatus": status, "SmsStatus": status}
    assert adapter().parse_webhook(callback(params)).reports == []


def test_a_body_without_a_message_sid_is_unreadable() -> None:
    with pytest.raises(ValueError, match="MessageSid"):
        adapter().parse_webhook(callback({"Foo": "bar"}))
