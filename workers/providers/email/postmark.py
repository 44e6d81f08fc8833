"""Postmark email: the single-message Email API, and its webhooks for results.

Options (an account named `postmark` reads them from LIFELINE_POSTMARK_<OPTION>):
- `server_token` (LIFELINE_POSTMARK_SERVER_TOKEN), required: the Postmark server's API token.
- `from` (LIFELINE_POSTMARK_FROM): the sender (a confirmed sender signature), else
  LIFELINE_EMAIL_FROM.
- `message_stream` (LIFELINE_POSTMARK_MESSAGE_STREAM): default `outbound` (transactional);
  lifecycle campaigns on a marketing account belong on a broadcast stream (`broadcast`).
- `base_url` (LIFELINE_POSTMARK_BASE_URL): default https://api.postmarkapp.com; `timeout`.
- `webhook_user` and `webhook_password` (LIFELINE_POSTMARK_WEBHOOK_USER, ..._PASSWORD): the
  basic auth credentials put in the webhook URL at Postmark. Without them every webhook is
  refused; setting only one of them is a configuration error.

Errors: 429, 5xx and timeouts are retryable (honouring Retry-After). A 422 carries Postmark's
ErrorCode: 406 (inactive recipient: it hard bounced, complained or was suppressed) is
address_gone; 300 (invalid email request) and every other code are permanent, as is 401 (a
wrong server token), with Postmark's message.

Webhook: Postmark signs nothing; it documents basic auth over HTTPS (and IP allow-listing at
the network's edge). A request is accepted only with the configured credentials, compared in
constant time.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
from typing import Any

import httpx

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
from workers.providers.common import advice, iso_time, our_message_id, text_or_none
from workers.providers.http import base_url, call, client_for, fail, json_body

DEFAULT_BASE_URL = "https://api.postmarkapp.com"
DEFAULT_STREAM = "outbound"
METADATA_KEY = "lifeline_message_id"
INACTIVE_RECIPIENT = 406

# Bounce types that say the address will never take mail; the rest (Transient, SoftBounce,
# DnsError, AutoResponder, ...) are temporary or not about delivery, and are not reported.
# Blocked is the receiver refusing this message, not a dead address: the message failed.
HARD_BOUNCES = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
FAILED_BOUNCES = {"Blocked"}
# Why Postmark stopped sending to an address (SubscriptionChange.SuppressionReason).
SUPPRESSIONS: dict[str, ReportStatus] = {
    "HardBounce": "bounced",
    "SpamComplaint": "complained",
    "ManualSuppression": "unsubscribed",
}
# Where each record type keeps its time.
TIME_FIELDS = {
    "Delivery": "DeliveredAt",
    "Bounce": "BouncedAt",
    "SpamComplaint": "BouncedAt",
    "Open": "ReceivedAt",
    "Click": "ReceivedAt",
    "SubscriptionChange": "ChangedAt",
}


class Postmark:
    # Postmark takes no idempotency key: a send repeated after an unknown outcome may arrive
    # twice.
    idempotent = False
    channel = "email"

    def __init__(
        self,
        name: str,
        server_token: str,
        sender: str,
        *,
        stream: str = DEFAULT_STREAM,
        base: str = DEFAULT_BASE_URL,
        webhook_credentials: tuple[str, str] | None = None,
        no_credentials_reason: str = "webhooks are refused: no credentials are set",
        client: httpx.Client | None = None,
    ):
        self.name = name
        self.server_token = server_token
        self.sender = sender
        self.stream = stream
        self.url = f"{base.rstrip('/')}/email"
        self.expected_auth = (
            f"{webhook_credentials[0]}:{webhook_credentials[1]}".encode()
            if webhook_credentials
            else None
        )
        self.no_credentials_reason = no_credentials_reason
        self.client = client or httpx.Client(timeout=10.0)

    def send(self, message: Outgoing) -> Sent:
        body: dict[str, Any] = {
            "From": self.sender,
            "To": message.to,
            "Subject": message.content.get("subject", ""),
            "TextBody": message.content.get("text", ""),
            "Headers": [{"Name": name, "Value": value} for name, value in message.headers.items()],
            "Metadata": {METADATA_KEY: str(message.message_id)},
            "MessageStream": self.stream,
        }
        if message.content.get("html"):
            body["HtmlBody"] = message.content["html"]
        response = call(
            self.client,
            "POST",
            self.url,
            json=body,
            headers={"Accept": "application/json", "X-Postmark-Server-Token": self.server_token},
        )
        if not response.is_success:
            raise _failure(response)
        answer = json_body(response)
        found = answer.get("MessageID") if isinstance(answer, dict) else None
        return Sent(provider_message_id=found if isinstance(found, str) and found else None)

    def verify_webhook(self, request: Inbound) -> None:
        if self.expected_auth is None:
            raise WebhookRejected(self.no_credentials_reason)
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise WebhookRejected("the Postmark webhook carries no basic auth credentials")
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise WebhookRejected("the Postmark basic auth credentials are malformed") from None
        if not hmac.compare_digest(given, self.expected_auth):
            raise WebhookRejected("the Postmark webhook credentials do not match")

    def parse_webhook(self, request: Inbound) -> WebhookResult:
        try:
            record = request.json()
        except ValueError as exc:
            raise ValueError(f"a Postmark webhook is JSON: {exc}") from exc
        if not isinstance(record, dict) or not isinstance(record.get("RecordType"), str):
            raise ValueError("a Postmark webhook is a JSON object with a RecordType")
        report = _report(record)
        return WebhookResult(reports=[report] if report else [])


def _failure(response: httpx.Response) -> ProviderError:
    body = json_body(response)
    code = body.get("ErrorCode") if isinstance(body, dict) else None
    message = body.get("Message") if isinstance(body, dict) else None
    reason = f"ErrorCode {code}: {message}" if code is not None else None
    # An inactive recipient will not take mail from this server until someone reactivates it.
    return fail(response, reason, gone=(422,) if code == INACTIVE_RECIPIENT else ())


def _status(record: dict[str, Any]) -> ReportStatus | None:
    kind = record["RecordType"]
    if kind == "Bounce":
        bounce = record.get("Type")
        if bounce in HARD_BOUNCES:
            return "bounced"
        return "failed" if bounce in FAILED_BOUNCES else None
    if kind == "SubscriptionChange":
        if record.get("SuppressSending") is not True:
            return None  # a reactivation
        # A suppression after a hard bounce or a complaint is that, not an unsubscribe.
        return SUPPRESSIONS.get(str(record.get("SuppressionReason")), "unsubscribed")
    simple: dict[str, ReportStatus] = {
        "Delivery": "delivered",
        "Open": "opened",
        "Click": "clicked",
        "SpamComplaint": "complained",
    }
    return simple.get(kind)


def _report(record: dict[str, Any]) -> Report | None:
    status = _status(record)
    if status is None:
        return None
    metadata = record.get("Metadata")
    provider_id = record.get("MessageID")
    # What the receiving server said, else Postmark's description of the bounce type.
    said = text_or_none(record.get("Details")) or text_or_none(record.get("Description"))
    at = iso_time(record.get(TIME_FIELDS.get(record["RecordType"], "")))
    return Report(
        event_id=_event_id(record),
        status=status,
        at=at or dt.datetime.now(dt.UTC),  # no time given: when it reached us
        message_id=our_message_id(
            metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
        ),
        provider_message_id=provider_id if isinstance(provider_id, str) and provider_id else None,
        address=text_or_none(record.get("Email")) or text_or_none(record.get("Recipient")),
        detail=said if status in ("bounced", "failed") else None,
        url=text_or_none(record.get("OriginalLink")) if status == "clicked" else None,
    )


def _event_id(record: dict[str, Any]) -> str:
    """Postmark's deliveries, opens, clicks and subscription changes carry no event id (only
    bounces have an ID). A webhook Postmark retries repeats the same record, so the same fields
    make the same id and the replay changes nothing; a second open or click of one message
    differs in its time (and link), so it is a new event."""
    kind = record["RecordType"]
    parts = [
        kind,
        record.get("ID") or record.get("MessageID"),
        record.get("Email") or record.get("Recipient"),
        record.get(TIME_FIELDS.get(kind, "")),
        record.get("OriginalLink"),
    ]
    digest = hashlib.sha256("\x1f".join(str(p or "") for p in parts).encode()).hexdigest()
    return f"{kind}:{digest[:32]}"


def _credentials(account: Account) -> tuple[tuple[str, str] | None, str]:
    """The webhook credentials, or why webhooks are refused without them."""
    user, password = account.get("webhook_user"), account.get("webhook_password")
    if user and password:
        return (user, password), ""
    if user or password:
        # Half a pair is a mistake, not a choice to go without webhooks.
        raise ProviderConfigError(advice(account, "webhook_password" if user else "webhook_user"))
    missing = [advice(account, key) for key in ("webhook_user", "webhook_password")]
    return None, "webhooks are refused: " + "; ".join(missing)


def postmark(account: Account, settings: Settings) -> Postmark:
    """Sending needs `server_token`; receiving webhooks needs `webhook_user` and
    `webhook_password` as well."""
    credentials, refused = _credentials(account)
    return Postmark(
        account.name,
        account.require("server_token"),
        account.get("from") or settings.email_from,
        stream=account.get("message_stream") or DEFAULT_STREAM,
        base=base_url(account, DEFAULT_BASE_URL),
        webhook_credentials=credentials,
        no_credentials_reason=refused,
        client=client_for(account),
    )
