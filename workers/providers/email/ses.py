"""Amazon SES (API v2 SendEmail), with delivery reports through Amazon SNS.

Options (providers file, or LIFELINE_SES_<OPTION> for the account named `ses`):
  access_key_id, secret_access_key (LIFELINE_SES_ACCESS_KEY_ID, LIFELINE_SES_SECRET_ACCESS_KEY),
  session_token (LIFELINE_SES_SESSION_TOKEN, for temporary credentials), region
  (LIFELINE_SES_REGION, required), configuration_set (LIFELINE_SES_CONFIGURATION_SET: the set
  whose event destination publishes to SNS), topic_arn (LIFELINE_SES_TOPIC_ARN: the SNS topics,
  comma-separated, whose messages are accepted; required for receiving webhooks, not for
  sending), base_url (LIFELINE_SES_BASE_URL, default https://email.<region>.amazonaws.com),
  timeout (LIFELINE_SES_TIMEOUT), from (LIFELINE_SES_FROM, else LIFELINE_EMAIL_FROM).

Requests are signed with AWS Signature Version 4 by botocore's signer. The message goes as
Content.Raw: the MIME message the SMTP adapter builds (7-bit, lines under 1,000 characters,
as SES requires of raw content), so List-Unsubscribe reaches the recipient exactly as written.
Simple content's Headers would do too, but caps a header value at 870 characters, which a
List-Unsubscribe carrying a signed token and a mailto: can pass. Our message id travels as the
email tag `lifeline_message_id`. SES replaces the Message-ID, so `Sent` is SES's MessageId.

Errors: 429, TooManyRequestsException, ThrottlingException, LimitExceededException (sending
quota) and 5xx are retryable; MessageRejected, MailFromDomainNotVerifiedException,
AccountSuspendedException, SendingPausedException and other 4xx are permanent with SES's
message. SES has no idempotency key. Nothing is address_gone at send time: SES accepts a
suppressed or unknown address and reports the bounce later.

Webhook: SNS messages are verified as AWS documents (signature version 1, SHA1withRSA, or 2,
SHA256withRSA, over the type's fields in order), with the certificate fetched over https only
from sns.<region>.amazonaws.com(.cn) (any other URL is refused before fetching) and cached per
URL. The topic is checked first, and without topic_arn every webhook is refused: a signature
only proves that SNS sent the message, and any AWS account can subscribe our endpoint to its own
topic (SNS signs that SubscriptionConfirmation too), then publish forged reports. A certificate
that cannot be fetched raises, so the endpoint answers 5xx and SNS tries again. The
SubscribeURL we are asked to visit must be https on an SNS host, like the certificate URL.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from service.delivery.providers import (
    Account,
    Inbound,
    Outgoing,
    ProviderConfigError,
    ProviderError,
    Report,
    ReportStatus,
    Sent,
    WebhookRejected,
    WebhookResult,
)
from service.kit.settings import Settings
from workers.providers.common import iso_time, mapping_or_empty, our_message_id, setting
from workers.providers.email.smtp import build_email, wire_bytes
from workers.providers.http import base_url, call, client_for, excerpt, fail, json_body

SEND_PATH = "/v2/email/outbound-emails"
TAG = "lifeline_message_id"
REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+")

RETRYABLE_ERRORS = frozenset(
    {"TooManyRequestsException", "ThrottlingException", "LimitExceededException"}
)

# --- SNS signatures ---------------------------------------------------------------------------

SNS_CERT_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SIGNED_FIELDS["UnsubscribeConfirmation"] = SIGNED_FIELDS["SubscriptionConfirmation"]
OPTIONAL_FIELDS = frozenset({"Subject"})
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}
CERT_CACHE_SIZE = 32


def string_to_sign(envelope: Mapping[str, Any]) -> bytes:
    """The documented canonical form: each signed field present, in order, as name\\nvalue\\n."""
    fields = SIGNED_FIELDS.get(str(envelope.get("Type")))
    if fields is None:
        raise WebhookRejected(f"unknown SNS message type {envelope.get('Type')!r}")
    lines: list[str] = []
    for name in fields:
        value = envelope.get(name)
        if value is None and name in OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise WebhookRejected(f"SNS message without {name}")
        lines += [name, value]
    return "".join(line + "\n" for line in lines).encode()


def is_sns_url(url: str) -> bool:
    """https on the default port of one of SNS's own hosts."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return False
    return (
        parsed.scheme == "https"
        and not parsed.userinfo
        and parsed.port in (None, 443)
        and SNS_CERT_HOST.fullmatch(parsed.host) is not None
    )


def check_cert_url(url: str) -> None:
    """A forged message must not make us fetch (or trust) a certificate from anywhere else."""
    if not is_sns_url(url):
        raise WebhookRejected(f"SigningCertURL is not an Amazon SNS certificate URL: {url!r}")


def fetch_over_https(url: str, timeout: float = 10.0) -> bytes:
    response = httpx.get(url, timeout=timeout, follow_redirects=False)
    response.raise_for_status()
    return response.content


# --- The adapter ------------------------------------------------------------------------------


class Ses:
    # SendEmail takes no idempotency key: a retry after a lost answer can send twice.
    idempotent = False

    def __init__(
        self,
        *,
        region: str,
        credentials: Credentials,
        sender: str,
        url: str,
        client: httpx.Client,
        configuration_set: str | None = None,
        topic_arns: frozenset[str] = frozenset(),
        no_topic_reason: str = "webhooks are refused: set option 'topic_arn'",
        fetch_certificate: Callable[[str], bytes] = fetch_over_https,
    ):
        self.name = "ses"
        self.channel = "email"
        self.region = region
        self.credentials = credentials
        self.sender = sender
        self.url = url
        self.client = client
        self.configuration_set = configuration_set
        self.topic_arns = topic_arns
        self.no_topic_reason = no_topic_reason
        self.fetch_certificate = fetch_certificate
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._keys_lock = threading.Lock()

    # --- send ---

    def send(self, message: Outgoing) -> Sent:
        raw = wire_bytes(build_email(message, self.sender))
        payload: dict[str, Any] = {
            "Destination": {"ToAddresses": [message.to]},
            "Content": {"Raw": {"Data": base64.b64encode(raw).decode("ascii")}},
            "EmailTags": [{"Name": TAG, "Value": str(message.message_id)}],
        }
        if self.configuration_set:
            payload["ConfigurationSetName"] = self.configuration_set
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = self._signed_headers(body)
        response = call(self.client, "POST", self.url, content=body, headers=headers)
        if not response.is_success:
            raise _error(response)
        answer = json_body(response)
        found = answer.get("MessageId") if isinstance(answer, dict) else None
        # Accepted is accepted: reports still name the message by its lifeline_message_id tag.
        return Sent(provider_message_id=found if isinstance(found, str) else None)

    def _signed_headers(self, body: bytes) -> dict[str, str]:
        request = AWSRequest(
            method="POST", url=self.url, data=body, headers={"Content-Type": "application/json"}
        )
        SigV4Auth(self.credentials, "ses", self.region).add_auth(request)
        return dict(request.headers.items())

    # --- webhook ---

    def verify_webhook(self, request: Inbound) -> None:
        if not self.topic_arns:
            raise WebhookRejected(self.no_topic_reason)
        try:
            envelope = request.json()
        except ValueError:
            raise WebhookRejected("the body is not an SNS message") from None
        if not isinstance(envelope, dict):
            raise WebhookRejected("the body is not an SNS message")
        # Checked first so a foreign topic costs no certificate fetch; the signature below
        # then proves the TopicArn was not altered.
        if envelope.get("TopicArn") not in self.topic_arns:
            raise WebhookRejected(f"SNS topic {envelope.get('TopicArn')!r} is not accepted")
        canonical = string_to_sign(envelope)
        algorithm = HASHES.get(str(envelope.get("SignatureVersion")))
        if algorithm is None:
            raise WebhookRejected(
                f"unknown SNS SignatureVersion {envelope.get('SignatureVersion')!r}"
            )
        try:
            signature = base64.b64decode(str(envelope.get("Signature", "")), validate=True)
        except binascii.Error:
            raise WebhookRejected("the SNS Signature is not base64") from None
        key = self._public_key(str(envelope.get("SigningCertURL", "")))
        try:
            key.verify(signature, canonical, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise WebhookRejected("the SNS signature does not verify") from None

    def _public_key(self, url: str) -> rsa.RSAPublicKey:
        check_cert_url(url)
        with self._keys_lock:
            known = self._keys.get(url)
        if known is not None:
            return known
        try:
            key = x509.load_pem_x509_certificate(self.fetch_certificate(url)).public_key()
        except ValueError:
            raise WebhookRejected("SigningCertURL did not give a PEM certificate") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRejected("the SNS certificate has no RSA key")
        with self._keys_lock:
            if len(self._keys) >= CERT_CACHE_SIZE:
                self._keys.clear()
            self._keys[url] = key
        return key

    def parse_webhook(self, request: Inbound) -> WebhookResult:
        envelope = request.json()
        kind = envelope.get("Type") if isinstance(envelope, dict) else None
        if kind == "SubscriptionConfirmation":
            subscribe_url = _text(envelope, "SubscribeURL")
            # Signed by SNS, but the endpoint will visit it: only ever an SNS host over https.
            if not is_sns_url(subscribe_url):
                raise ValueError(f"SubscribeURL is not an Amazon SNS URL: {subscribe_url!r}")
            return WebhookResult(confirm_url=subscribe_url)
        if kind == "UnsubscribeConfirmation":
            return WebhookResult()
        if kind != "Notification":
            raise ValueError(f"unknown SNS message type {kind!r}")
        event = json.loads(_text(envelope, "Message"))
        if not isinstance(event, dict):
            raise ValueError("the SNS Message is not an SES event")
        return WebhookResult(reports=ses_reports(event, envelope))


def _text(envelope: Mapping[str, Any], name: str) -> str:
    value = envelope.get(name)
    if not isinstance(value, str):
        raise ValueError(f"SNS message without {name}")
    return value


def _error(response: httpx.Response) -> ProviderError:
    """SES v2 (REST-JSON) names the error in x-amzn-ErrorType (or the body's __type/code) and
    explains it in the body's message."""
    body = json_body(response)
    body = body if isinstance(body, dict) else {}
    named = response.headers.get("x-amzn-ErrorType") or body.get("__type") or body.get("code")
    error = str(named or "").split(":")[0].rpartition("#")[2]
    text = body.get("message") or body.get("Message") or excerpt(response)
    reason = f"{error}: {text}" if error else str(text)
    if error in RETRYABLE_ERRORS:
        return ProviderError("retryable", f"HTTP {response.status_code}: {reason}")
    return fail(response, reason)


# --- SES events -------------------------------------------------------------------------------


def ses_reports(event: Mapping[str, Any], envelope: Mapping[str, Any]) -> list[Report]:
    """An SES event (configuration-set event publishing: eventType; identity notifications:
    notificationType) as reports; one per recipient for bounces, complaints and deliveries."""
    kind = event.get("eventType") or event.get("notificationType")
    mail = mapping_or_empty(event.get("mail"))
    found: list[tuple[ReportStatus, str | None, str | None, str | None, Mapping[str, Any]]] = []
    if kind == "Delivery":
        delivery = mapping_or_empty(event.get("delivery"))
        for address in delivery.get("recipients") or []:
            found.append(("delivered", str(address), delivery.get("smtpResponse"), None, delivery))
    elif kind == "Open":
        found.append(("opened", None, None, None, mapping_or_empty(event.get("open"))))
    elif kind == "Click":
        click = mapping_or_empty(event.get("click"))
        found.append(("clicked", None, None, click.get("link"), click))
    elif kind == "Bounce":
        bounce = mapping_or_empty(event.get("bounce"))
        # Transient and undetermined bounces are soft: SES keeps trying, and nothing is final.
        if bounce.get("bounceType") == "Permanent":
            for recipient in bounce.get("bouncedRecipients") or []:
                recipient = mapping_or_empty(recipient)
                detail = recipient.get("diagnosticCode") or (
                    f"{bounce.get('bounceType')}/{bounce.get('bounceSubType')}"
                )
                found.append(("bounced", recipient.get("emailAddress"), detail, None, bounce))
    elif kind == "Complaint":
        complaint = mapping_or_empty(event.get("complaint"))
        for recipient in complaint.get("complainedRecipients") or []:
            address = mapping_or_empty(recipient).get("emailAddress")
            detail = complaint.get("complaintFeedbackType")
            found.append(("complained", address, detail, None, complaint))
    elif kind == "Reject":
        reject = mapping_or_empty(event.get("reject"))
        found.append(("failed", None, reject.get("reason"), None, reject))
    elif kind == "Rendering Failure":
        failure = mapping_or_empty(event.get("failure"))
        found.append(("failed", None, failure.get("errorMessage"), None, failure))

    sns_id = _text(envelope, "MessageId")
    fallback = (
        iso_time(mail.get("timestamp"))
        or iso_time(envelope.get("Timestamp"))
        or dt.datetime.now(dt.UTC)
    )
    return [
        Report(
            event_id=sns_id if len(found) == 1 else f"{sns_id}:{index}",
            status=status,
            at=iso_time(part.get("timestamp")) or fallback,
            message_id=_our_id(mail),
            provider_message_id=mail.get("messageId"),
            address=address,
            detail=detail,
            url=url,
        )
        for index, (status, address, detail, url, part) in enumerate(found)
    ]


def _our_id(mail: Mapping[str, Any]) -> int | None:
    """mail.tags maps each tag to a list of values."""
    values = mapping_or_empty(mail.get("tags")).get(TAG)
    first = values[0] if isinstance(values, list) and values else None
    return our_message_id(first)


def ses(account: Account, settings: Settings) -> Ses:
    region = account.require("region")
    if not REGION.fullmatch(region):
        raise ProviderConfigError(
            f"provider account {account.name!r}: region {region!r} is not an AWS region name"
        )
    credentials = Credentials(
        account.require("access_key_id"),
        account.require("secret_access_key"),
        account.get("session_token"),
    )
    topics = frozenset(
        topic.strip() for topic in (account.get("topic_arn") or "").split(",") if topic.strip()
    )
    provider = Ses(
        region=region,
        credentials=credentials,
        sender=account.get("from", settings.email_from) or settings.email_from,
        url=base_url(account, f"https://email.{region}.amazonaws.com") + SEND_PATH,
        client=client_for(account),
        configuration_set=account.get("configuration_set"),
        topic_arns=topics,
        no_topic_reason=(
            f"webhooks are refused: set {setting(account, 'topic_arn')} to the SNS topic ARNs"
            " (comma-separated) whose messages are accepted"
        ),
    )
    provider.name = account.name
    return provider
