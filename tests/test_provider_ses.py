"""Amazon SES: SendEmail against a local server (its SigV4 signature recomputed with botocore
from what the server received), error classification, and SNS delivery reports signed with a
test key and verified as AWS documents."""

from __future__ import annotations

import base64
import datetime as dt
import json
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]  # as in the adapter
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from service.delivery.accounts import load_provider
from service.delivery.providers import (
    Account,
    Inbound,
    Outgoing,
    ProviderConfigError,
    ProviderError,
    Report,
    WebhookRejected,
    build_adapter,
)
from service.kit.settings import Settings
from workers.providers.email.ses import Ses, ses

KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "eu-west-1"
SENDER = "Lifeline <hello@news.example.org>"
UNSUBSCRIBE = "<https://lifeline.example/v1/unsubscribe/" + "t0k3n" * 40 + ">"
MESSAGE = Outgoing(
    42,
    "email",
    "ada@example.com",
    {"subject": "Welcome, Ada ✓", "html": "<p>Hi Ada ✓</p>", "text": "Hi Ada ✓"},
    {"List-Unsubscribe": UNSUBSCRIBE, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    idempotency_key="lifeline-message-42",
)
PATH = "/v2/email/outbound-emails"


def account(server: HTTPServer | None = None, **options: str) -> Account:
    base = {
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        "region": REGION,
        "from": SENDER,
        "configuration_set": "lifeline-events",
    }
    if server is not None:
        base["base_url"] = server.url_for("/")
    return Account("ses", "ses", {**base, **options})


def adapter(server: HTTPServer | None = None, **options: str) -> Ses:
    return ses(account(server, **options), Settings())


def received(server: HTTPServer) -> Request:
    [(request, _)] = server.log
    return request


def recomputed_signature(request: Request, secret: str, token: str | None = None) -> str:
    """botocore's SigV4 over the request exactly as the server received it."""
    authorization = request.headers["Authorization"]
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    again = AWSRequest(
        method=request.method,
        url=f"http://{request.headers['Host']}{request.full_path.rstrip('?')}",
        data=request.get_data(),
        headers={name: request.headers[name] for name in signed},
    )
    again.context["timestamp"] = request.headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials(KEY_ID, secret, token), "ses", REGION)
    canonical = signer.canonical_request(again)
    return str(signer.signature(signer.string_to_sign(again, canonical), again))


# --- Sending ----------------------------------------------------------------------------------


def test_send_email_is_signed_with_sigv4_for_ses_in_the_region(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_json({"MessageId": "0102-ab"})

    sent = adapter(httpserver).send(MESSAGE)

    assert sent.provider_message_id == "0102-ab"
    request = received(httpserver)
    assert request.headers["Content-Type"] == "application/json"
    amz_date = request.headers["X-Amz-Date"]
    sent_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    assert abs(dt.datetime.now(dt.UTC) - sent_at) < dt.timedelta(minutes=1)
    algorithm, _, fields = request.headers["Authorization"].partition(" ")
    parts = dict(field.strip().split("=", 1) for field in fields.split(","))
    assert algorithm == "AWS4-HMAC-SHA256"
    assert parts["Credential"] == f"{KEY_ID}/{amz_date[:8]}/{REGION}/ses/aws4_request"
    assert {"host", "x-amz-date", "content-type"} <= set(parts["SignedHeaders"].split(";"))
    assert parts["Signature"] == recomputed_signature(request, SECRET)
    assert parts["Signature"] != recomputed_signature(request, SECRET + "x")
    assert SECRET not in str(request.headers)


def test_the_raw_message_carries_the_unsubscribe_headers_and_both_bodies(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_json({"MessageId": "0102-ab"})
    adapter(httpserver).send(MESSAGE)

    body = received(httpserver).get_json()
    assert body["Destination"] == {"ToAddresses": ["ada@example.com"]}
    assert body["EmailTags"] == [{"Name": "lifeline_message_id", "Value": "42"}]
    assert body["ConfigurationSetName"] == "lifeline-events"
    raw = base64.b64decode(body["Content"]["Raw"]["Data"])
    assert raw.isascii() and max(len(line) for line in raw.split(b"\r\n")) < 1000
    email = message_from_bytes(raw, policy=policy.default)
    assert isinstance(email, EmailMessage)
    assert (email["From"], email["To"], email["Subject"]) == (
        SENDER,
        "ada@example.com",
        "Welcome, Ada ✓",
    )
    assert email["List-Unsubscribe"] == UNSUBSCRIBE
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = email.iter_parts()
    assert text.get_content().strip() == "Hi Ada ✓"
    assert html.get_content().strip() == "<p>Hi Ada ✓</p>"


def test_temporary_credentials_send_their_session_token_signed(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_json({"MessageId": "0102-ab"})
    adapter(httpserver, session_token="FQoGZXIvYXdzE-token").send(MESSAGE)

    request = received(httpserver)
    assert request.headers["X-Amz-Security-Token"] == "FQoGZXIvYXdzE-token"
    assert "x-amz-security-token" in request.headers["Authorization"]
    assert request.headers["Authorization"].endswith(
        "Signature=" + recomputed_signature(request, SECRET, "FQoGZXIvYXdzE-token")
    )


def ses_error(status: int, error: str, message: str) -> Response:
    return Response(
        json.dumps({"message": message}),
        status=status,
        headers={"x-amzn-ErrorType": f"{error}:http://internal.amazon.com/coral/"},
        content_type="application/json",
    )


@pytest.mark.parametrize(
    ("status", "error", "message", "kind"),
    [
        (429, "TooManyRequestsException", "Maximum sending rate exceeded.", "retryable"),
        (400, "ThrottlingException", "Rate exceeded", "retryable"),
        (400, "LimitExceededException", "Daily message quota exceeded.", "retryable"),
        (500, "InternalFailure", "internal error", "retryable"),
        (503, "ServiceUnavailable", "unavailable", "retryable"),
        (400, "MessageRejected", "Email address is not verified.", "permanent"),
        (400, "MailFromDomainNotVerifiedException", "MAIL FROM not verified", "permanent"),
        (400, "AccountSuspendedException", "Sending is suspended.", "permanent"),
        (400, "SendingPausedException", "Sending is paused.", "permanent"),
        (403, "UnrecognizedClientException", "The security token is invalid.", "permanent"),
    ],
)
def test_ses_errors_are_classified_with_their_message(
    httpserver: HTTPServer, status: int, error: str, message: str, kind: str
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_response(
        ses_error(status, error, message)
    )
    with pytest.raises(ProviderError) as raised:
        adapter(httpserver).send(MESSAGE)
    assert raised.value.kind == kind
    assert raised.value.reason == f"HTTP {status}: {error}: {message}"


def test_an_unreachable_endpoint_is_retryable() -> None:
    broken = ses(account(base_url="http://127.0.0.1:9"), Settings())
    with pytest.raises(ProviderError) as raised:
        broken.send(MESSAGE)
    assert raised.value.kind == "retryable"


def test_the_account_is_configured_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ProviderConfigError, match="LIFELINE_SES_REGION"):
        load_provider("ses", Settings())
    monkeypatch.setenv("LIFELINE_SES_REGION", "us-east-2")
    monkeypatch.setenv("LIFELINE_SES_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("LIFELINE_SES_SECRET_ACCESS_KEY", SECRET)
    provider = load_provider("ses", Settings(email_from=SENDER))
    assert isinstance(provider, Ses)
    assert provider.url == "https://email.us-east-2.amazonaws.com/v2/email/outbound-emails"
    assert (provider.idempotent, provider.sender, provider.configuration_set) == (
        False,
        SENDER,
        None,
    )
    with pytest.raises(ProviderConfigError, match="not an AWS region"):
        build_adapter(account(region="evil.example.com/x"), Settings())


# --- SNS delivery reports ---------------------------------------------------------------------

TOPIC = f"arn:aws:sns:{REGION}:123456789012:lifeline-ses-events"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-0000000000.pem"


@pytest.fixture(scope="module")
def signing_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    """An RSA key and a self-signed certificate standing in for SNS's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sns.{REGION}.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def aws_string_to_sign(message: dict[str, str]) -> bytes:
    """Written from the AWS docs: Notification signs Message, MessageId, Subject (if present),
    Timestamp, TopicArn, Type; confirmations sign Message, MessageId, SubscribeURL, Timestamp,
    Token, TopicArn, Type; each as the name, a newline, the value, a newline."""
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{name}\n{message[name]}\n" for name in names if name in message).encode()


def signed(
    key: rsa.RSAPrivateKey, message: dict[str, str], version: str = "2", **changes: str
) -> dict[str, str]:
    message = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL, **changes}
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(aws_string_to_sign(message), padding.PKCS1v15(), digest)
    return {**message, "Signature": base64.b64encode(signature).decode()}


def ses_event(kind: str = "Delivery", **body: Any) -> dict[str, Any]:
    return {
        "eventType": kind,
        "mail": {
            "timestamp": "2026-11-22T01:00:00.000Z",
            "source": "hello@news.example.org",
            "messageId": "0102-ab",
            "destination": ["ada@example.com"],
            "tags": {"ses:configuration-set": ["lifeline-events"], "lifeline_message_id": ["42"]},
        },
        **body,
    }


def notification(event: dict[str, Any], subject: str | None = None) -> dict[str, str]:
    message = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Message": json.dumps(event),
        "Timestamp": "2026-11-22T01:00:02.000Z",
    }
    if subject is not None:
        message["Subject"] = subject
    return message


CONFIRMATION = {
    "Type": "SubscriptionConfirmation",
    "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
    "Token": "2336412f37fb687f5d51e6e2425f004aed",
    "TopicArn": TOPIC,
    "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
    "SubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&Token=2336",
    "Timestamp": "2026-11-22T01:00:00.000Z",
}


def inbound(message: dict[str, Any]) -> Inbound:
    return Inbound(
        url="https://lifeline.example/v1/webhooks/ses",
        headers={"x-amz-sns-message-type": str(message.get("Type")), "content-type": "text/plain"},
        body=json.dumps(message).encode(),
    )


@pytest.fixture
def fetched() -> list[str]:
    return []


@pytest.fixture
def receiver(signing_key: tuple[rsa.RSAPrivateKey, bytes], fetched: list[str]) -> Ses:
    def fetch(url: str) -> bytes:
        fetched.append(url)
        return signing_key[1]

    provider = adapter(topic_arn=f"{TOPIC}, arn:aws:sns:{REGION}:123456789012:other")
    provider.fetch_certificate = fetch
    return provider


def rejected(receiver: Ses, message: dict[str, Any]) -> str:
    with pytest.raises(WebhookRejected) as raised:
        receiver.verify_webhook(inbound(message))
    return str(raised.value)


@pytest.mark.parametrize("version", ["1", "2"])
def test_signed_notifications_of_both_signature_versions_verify(
    receiver: Ses, signing_key: tuple[rsa.RSAPrivateKey, bytes], version: str, fetched: list[str]
) -> None:
    key = signing_key[0]
    receiver.verify_webhook(inbound(signed(key, notification(ses_event()), version)))
    receiver.verify_webhook(inbound(signed(key, notification(ses_event(), "Subject"), version)))
    receiver.verify_webhook(inbound(signed(key, CONFIRMATION, version)))
    assert fetched == [CERT_URL]  # fetched once, then cached


def test_a_subscription_confirmation_asks_to_visit_its_subscribe_url(
    receiver: Ses, signing_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    message = inbound(signed(signing_key[0], CONFIRMATION))
    receiver.verify_webhook(message)
    result = receiver.parse_webhook(message)
    assert (result.confirm_url, result.reports) == (CONFIRMATION["SubscribeURL"], [])


@pytest.mark.parametrize(
    ("original", "field", "value"),
    [
        (notification(ses_event(), "Delivery"), "Message", json.dumps(ses_event("Bounce"))),
        (notification(ses_event(), "Delivery"), "MessageId", "another-id"),
        (notification(ses_event(), "Delivery"), "Timestamp", "2026-11-23T00:00:00.000Z"),
        (notification(ses_event(), "Delivery"), "Subject", "Bounce"),
        (notification(ses_event()), "TopicArn", f"arn:aws:sns:{REGION}:123456789012:other"),
        (CONFIRMATION, "SubscribeURL", "https://sns.eu-west-1.amazonaws.com/?Action=Evil"),
        (CONFIRMATION, "Token", "another-token"),
        (CONFIRMATION, "Type", "UnsubscribeConfirmation"),
    ],
)
def test_a_tampered_message_is_rejected(
    receiver: Ses,
    signing_key: tuple[rsa.RSAPrivateKey, bytes],
    original: dict[str, str],
    field: str,
    value: str,
) -> None:
    message = signed(signing_key[0], original)
    receiver.verify_webhook(inbound(message))
    message[field] = value
    assert "does not verify" in rejected(receiver, message)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/SimpleNotificationService-0000000000.pem",
        f"http://sns.{REGION}.amazonaws.com/SimpleNotificationService-0000000000.pem",
        f"https://sns.{REGION}.amazonaws.com.evil.example.com/cert.pem",
        f"https://sns.{REGION}.amazonaws.com@evil.example.com/cert.pem",
        f"https://sns.{REGION}.amazonaws.com:8443/cert.pem",
        f"https://evil.example.com/sns.{REGION}.amazonaws.com/cert.pem",
        "https://s3.amazonaws.com/sns-certs/cert.pem",
    ],
)
def test_a_certificate_url_off_sns_is_refused_before_fetching(
    receiver: Ses, signing_key: tuple[rsa.RSAPrivateKey, bytes], fetched: list[str], url: str
) -> None:
    message = signed(signing_key[0], notification(ses_event()), SigningCertURL=url)
    assert "not an Amazon SNS certificate URL" in rejected(receiver, message)
    assert fetched == []


def test_china_region_certificate_hosts_are_accepted(
    receiver: Ses, signing_key: tuple[rsa.RSAPrivateKey, bytes], fetched: list[str]
) -> None:
    url = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem"
    receiver.verify_webhook(
        inbound(signed(signing_key[0], notification(ses_event()), SigningCertURL=url))
    )
    assert fetched == [url]


def test_an_unknown_signature_version_is_rejected(
    receiver: Ses, signing_key: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    message = signed(signing_key[0], notification(ses_event()), "2", SignatureVersion="3")
    assert "SignatureVersion" in rejected(receiver, message)


def test_a_signature_by_another_key_is_rejected(receiver: Ses) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "does not verify" in rejected(receiver, signed(stranger, notification(ses_event())))


def test_another_topic_is_rejected_even_when_signed(
    receiver: Ses, signing_key: tuple[rsa.RSAPrivateKey, bytes], fetched: list[str]
) -> None:
    foreign = signed(signing_key[0], notification(ses_event()), TopicArn=TOPIC + "-other")
    assert "is not accepted" in rejected(receiver, foreign)
    assert fetched == []


def test_without_topic_arn_every_webhook_is_refused_but_sending_works(
    signing_key: tuple[rsa.RSAPrivateKey, bytes], httpserver: HTTPServer
) -> None:
    """Any AWS account can subscribe the endpoint to its own topic; SNS signs that too."""
    options = {"access_key_id": KEY_ID, "secret_access_key": SECRET, "region": REGION}
    options["base_url"] = httpserver.url_for("/")
    from_env = Account("ses", "ses", options, where="LIFELINE_SES_{KEY}")
    provider = ses(from_env, Settings())
    provider.fetch_certificate = lambda url: signing_key[1]
    for message in (notification(ses_event()), CONFIRMATION):
        with pytest.raises(WebhookRejected, match="LIFELINE_SES_TOPIC_ARN"):
            provider.verify_webhook(inbound(signed(signing_key[0], message)))
    with pytest.raises(WebhookRejected, match="option 'topic_arn'"):
        adapter().verify_webhook(inbound(signed(signing_key[0], notification(ses_event()))))

    httpserver.expect_request(PATH, method="POST").respond_with_json({"MessageId": "0102-ab"})
    assert provider.send(MESSAGE).provider_message_id == "0102-ab"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/?Action=ConfirmSubscription&Token=2336",
        f"http://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&Token=2336",
        f"https://sns.{REGION}.amazonaws.com.evil.example.com/?Action=ConfirmSubscription",
        f"https://sns.{REGION}.amazonaws.com@evil.example.com/?Action=ConfirmSubscription",
        f"https://sns.{REGION}.amazonaws.com:8443/?Action=ConfirmSubscription",
        "https://169.254.169.254/latest/meta-data/",
    ],
)
def test_a_subscribe_url_off_sns_is_never_returned_to_visit(
    receiver: Ses, signing_key: tuple[rsa.RSAPrivateKey, bytes], url: str
) -> None:
    message = inbound(signed(signing_key[0], {**CONFIRMATION, "SubscribeURL": url}))
    receiver.verify_webhook(message)  # SNS signed it: only the URL itself is wrong
    with pytest.raises(ValueError, match="not an Amazon SNS URL"):
        receiver.parse_webhook(message)


@pytest.mark.parametrize(
    "body",
    [b"not json", b'["a list"]', b'{"Type": "Other", "TopicArn": "' + TOPIC.encode() + b'"}'],
)
def test_bodies_that_are_not_sns_messages_are_rejected(receiver: Ses, body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        receiver.verify_webhook(Inbound(url="https://lifeline.example/", headers={}, body=body))


# --- What SES events become -------------------------------------------------------------------


def reports(receiver: Ses, event: dict[str, Any]) -> list[Report]:
    return receiver.parse_webhook(inbound(notification(event))).reports


def at(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp)


SNS_ID = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"


def test_a_delivery_names_our_message_and_ses_message(receiver: Ses) -> None:
    event = ses_event(
        delivery={
            "timestamp": "2026-11-22T01:00:01.500Z",
            "recipients": ["ada@example.com"],
            "smtpResponse": "250 2.6.0 Message received",
        }
    )
    assert reports(receiver, event) == [
        Report(
            event_id=SNS_ID,
            status="delivered",
            at=at("2026-11-22T01:00:01.500+00:00"),
            message_id=42,
            provider_message_id="0102-ab",
            address="ada@example.com",
            detail="250 2.6.0 Message received",
        )
    ]


def test_opens_and_clicks(receiver: Ses) -> None:
    (opened,) = reports(receiver, ses_event("Open", open={"timestamp": "2026-11-22T02:00:00Z"}))
    assert (opened.status, opened.at, opened.message_id) == (
        "opened",
        at("2026-11-22T02:00:00+00:00"),
        42,
    )
    click = {"timestamp": "2026-11-22T02:01:00Z", "link": "https://example.com/offer"}
    (clicked,) = reports(receiver, ses_event("Click", click=click))
    assert (clicked.status, clicked.url, clicked.event_id) == (
        "clicked",
        "https://example.com/offer",
        SNS_ID,
    )


def test_a_permanent_bounce_reports_each_recipient_and_a_transient_one_nothing(
    receiver: Ses,
) -> None:
    bounce = {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "timestamp": "2026-11-22T01:00:05Z",
        "bouncedRecipients": [
            {"emailAddress": "ada@example.com", "diagnosticCode": "smtp; 550 5.1.1 unknown"},
            {"emailAddress": "bob@example.com"},
        ],
    }
    found = reports(receiver, ses_event("Bounce", bounce=bounce))
    assert [(r.event_id, r.status, r.address, r.detail) for r in found] == [
        (f"{SNS_ID}:0", "bounced", "ada@example.com", "smtp; 550 5.1.1 unknown"),
        (f"{SNS_ID}:1", "bounced", "bob@example.com", "Permanent/General"),
    ]
    assert {r.message_id for r in found} == {42}
    transient = {**bounce, "bounceType": "Transient", "bounceSubType": "MailboxFull"}
    assert reports(receiver, ses_event("Bounce", bounce=transient)) == []


def test_identity_notifications_use_notification_type(receiver: Ses) -> None:
    event = ses_event(
        complaint={
            "timestamp": "2026-11-22T03:00:00Z",
            "complainedRecipients": [{"emailAddress": "ada@example.com"}],
            "complaintFeedbackType": "abuse",
        }
    )
    del event["eventType"]
    event["notificationType"] = "Complaint"
    (complained,) = reports(receiver, event)
    assert (complained.status, complained.address, complained.detail) == (
        "complained",
        "ada@example.com",
        "abuse",
    )


@pytest.mark.parametrize(
    ("event", "detail"),
    [
        (ses_event("Reject", reject={"reason": "Bad content"}), "Bad content"),
        (
            ses_event("Rendering Failure", failure={"errorMessage": "Attribute 'name' missing"}),
            "Attribute 'name' missing",
        ),
    ],
)
def test_rejects_and_rendering_failures_fail_the_message(
    receiver: Ses, event: dict[str, Any], detail: str
) -> None:
    (failed,) = reports(receiver, event)
    assert (failed.status, failed.detail, failed.message_id) == ("failed", detail, 42)
    assert failed.at == at("2026-11-22T01:00:00+00:00")  # the mail's time: no event time


def test_events_lifeline_does_not_track_give_no_reports(receiver: Ses) -> None:
    assert reports(receiver, ses_event("Send", send={})) == []
    assert reports(receiver, {"notificationType": "AmazonSnsSubscriptionSucceeded"}) == []


def test_an_unsubscribe_confirmation_and_unreadable_messages(receiver: Ses) -> None:
    goodbye = {**CONFIRMATION, "Type": "UnsubscribeConfirmation"}
    assert receiver.parse_webhook(inbound(goodbye)).confirm_url is None
    with pytest.raises(ValueError):
        receiver.parse_webhook(inbound({**notification(ses_event()), "Message": "not json"}))


def test_the_default_fetcher_is_never_reached_for_a_foreign_url(
    signing_key: tuple[rsa.RSAPrivateKey, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def no_network(url: str, **_: Any) -> httpx.Response:
        calls.append(url)
        raise AssertionError("fetched")

    monkeypatch.setattr(httpx, "get", no_network)
    message = signed(
        signing_key[0], notification(ses_event()), SigningCertURL="https://evil.example.com/c.pem"
    )
    with pytest.raises(WebhookRejected, match="not an Amazon SNS certificate URL"):
        adapter(topic_arn=TOPIC).verify_webhook(inbound(message))
    assert calls == []
