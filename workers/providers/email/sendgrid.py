"""Twilio SendGrid email: the v3 Mail Send API, and the signed Event Webhook for results.

Options (an account named `sendgrid` reads them from LIFELINE_SENDGRID_<OPTION>):
- `api_key` (LIFELINE_SENDGRID_API_KEY), required: sent as a Bearer token.
- `from` (LIFELINE_SENDGRID_FROM): the sender, else LIFELINE_EMAIL_FROM.
- `base_url` (LIFELINE_SENDGRID_BASE_URL): default https://api.sendgrid.com
  (https://api.eu.sendgrid.com for an EU regional subuser); `timeout`.
- `webhook_public_key` (LIFELINE_SENDGRID_WEBHOOK_PUBLIC_KEY): the Event Webhook's
  verification key as SendGrid shows it (base64 DER). Without it every webhook is refused.
- `webhook_tolerance_seconds` (LIFELINE_SENDGRID_WEBHOOK_TOLERANCE_SECONDS): how far a signed
  timestamp may be from now, default 600.

Errors: 429 (honouring Retry-After), 5xx and timeouts are retryable; 400, 401, 403, 413 and
other 4xx are permanent, with SendGrid's own error messages. A suppressed address is not
refused at send time: SendGrid drops the message and reports it through the webhook.

Webhook: SendGrid signs the timestamp header followed by the raw body with ECDSA P-256 and
SHA-256 (X-Twilio-Email-Event-Webhook-Signature, base64 DER). A request without a valid
signature, or signed longer ago than the tolerance (a replayed capture), is rejected.
"""

from __future__ import annotations

import base64
import binascii
import time
from email.utils import parseaddr
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from service.delivery.providers import (
    Account,
    Inbound,
    Outgoing,
    ProviderConfigError,
    Report,
    ReportStatus,
    Sent,
    WebhookRejected,
    WebhookResult,
)
from service.kit.settings import Settings
from workers.providers.common import (
    epoch_time,
    our_message_id,
    refusal_while_unset,
    text_or_none,
)
from workers.providers.http import base_url, call, client_for, fail, json_body

DEFAULT_BASE_URL = "https://api.sendgrid.com"
SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
DEFAULT_TOLERANCE = 600.0
METADATA_KEY = "lifeline_message_id"

# Event types that are results; `processed`, `deferred` and the rest are not reported.
# `bounce` is decided by its `type`: a `blocked` one is not a hard bounce.
STATUSES: dict[str, ReportStatus] = {
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "dropped": "failed",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}


class SendGrid:
    # SendGrid takes no idempotency key: a send repeated after an unknown outcome may arrive
    # twice.
    idempotent = False
    channel = "email"

    def __init__(
        self,
        name: str,
        api_key: str,
        sender: str,
        *,
        base: str = DEFAULT_BASE_URL,
        public_key: ec.EllipticCurvePublicKey | None = None,
        no_key_reason: str = "webhooks are refused: no verification key is set",
        tolerance: float = DEFAULT_TOLERANCE,
        client: httpx.Client | None = None,
    ):
        self.name = name
        self.api_key = api_key
        self.sender = _address(sender)
        self.url = f"{base.rstrip('/')}/v3/mail/send"
        self.public_key = public_key
        self.no_key_reason = no_key_reason
        self.tolerance = tolerance
        self.client = client or httpx.Client(timeout=10.0)

    def send(self, message: Outgoing) -> Sent:
        # SendGrid refuses an empty content value, and wants text/plain before text/html.
        content = [
            {"type": kind, "value": message.content[key]}
            for kind, key in (("text/plain", "text"), ("text/html", "html"))
            if message.content.get(key)
        ]
        body: dict[str, Any] = {
            "personalizations": [
                {
                    "to": [{"email": message.to}],
                    "custom_args": {METADATA_KEY: str(message.message_id)},
                }
            ],
            "from": self.sender,
            "subject": message.content.get("subject", ""),
            "content": content,
        }
        if message.headers:
            body["headers"] = dict(message.headers)
        response = call(
            self.client,
            "POST",
            self.url,
            json=body,
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        if not response.is_success:
            raise fail(response, _errors(response))
        return Sent(provider_message_id=response.headers.get("X-Message-Id") or None)

    def verify_webhook(self, request: Inbound) -> None:
        if self.public_key is None:
            raise WebhookRejected(self.no_key_reason)
        signature = request.headers.get(SIGNATURE_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        if not signature or not timestamp:
            raise WebhookRejected("the SendGrid signature or timestamp header is missing")
        try:
            signed_at = int(timestamp)
        except ValueError:
            raise WebhookRejected("the SendGrid timestamp is not a number") from None
        if abs(time.time() - signed_at) > self.tolerance:
            raise WebhookRejected("the SendGrid signature is too old (or from the future)")
        try:
            self.public_key.verify(
                base64.b64decode(signature, validate=True),
                timestamp.encode() + request.body,
                ec.ECDSA(hashes.SHA256()),
            )
        except (binascii.Error, InvalidSignature):
            raise WebhookRejected("the SendGrid signature does not match") from None

    def parse_webhook(self, request: Inbound) -> WebhookResult:
        try:
            events = request.json()
        except ValueError as exc:
            raise ValueError(f"a SendGrid event batch is JSON: {exc}") from exc
        if not isinstance(events, list):
            raise ValueError("a SendGrid event batch is a JSON array")
        return WebhookResult(reports=[r for e in events if (r := _report(e)) is not None])


def _address(sender: str) -> dict[str, str]:
    name, address = parseaddr(sender)
    if "@" not in address:
        raise ProviderConfigError(f"the sender {sender!r} is not an email address")
    return {"email": address, "name": name} if name else {"email": address}


def _errors(response: httpx.Response) -> str | None:
    """SendGrid's messages from {"errors": [{"message", "field"}]}, naming the field."""
    body = json_body(response)
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return None
    messages = [
        f"{error.get('message')} ({error['field']})" if error.get("field") else error.get("message")
        for error in errors
        if isinstance(error, dict) and error.get("message")
    ]
    return "; ".join(str(m) for m in messages) or None


def _report(event: object) -> Report | None:
    """One event of a batch; an event that is not a result, or has no id, is skipped alone."""
    if not isinstance(event, dict):
        return None
    kind = event.get("event")
    if kind == "bounce":
        status: ReportStatus | None = "failed" if event.get("type") == "blocked" else "bounced"
    else:
        status = STATUSES.get(kind) if isinstance(kind, str) else None
    event_id = event.get("sg_event_id")
    if status is None or not isinstance(event_id, str) or not event_id:
        return None
    provider_id = event.get("sg_message_id")
    return Report(
        event_id=event_id,
        status=status,
        at=epoch_time(event.get("timestamp")),
        # Custom args come back at the top level of each event.
        message_id=our_message_id(event.get(METADATA_KEY)),
        # sg_message_id is the X-Message-Id of the send, then "." and a filter suffix.
        provider_message_id=provider_id.split(".", 1)[0] if isinstance(provider_id, str) else None,
        address=text_or_none(event.get("email")),
        detail=text_or_none(event.get("reason")) if status in ("bounced", "failed") else None,
        url=text_or_none(event.get("url")) if status == "clicked" else None,
    )


def _public_key(encoded: str) -> ec.EllipticCurvePublicKey:
    try:
        key = load_der_public_key(base64.b64decode("".join(encoded.split()), validate=True))
    except (binascii.Error, ValueError):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ProviderConfigError(
            "webhook_public_key is not SendGrid's verification key (a base64 DER P-256 key)"
        )
    return key


def sendgrid(account: Account, settings: Settings) -> SendGrid:
    """Sending needs `api_key`; receiving webhooks needs `webhook_public_key` as well."""
    encoded = account.get("webhook_public_key")
    return SendGrid(
        account.name,
        account.require("api_key"),
        account.get("from") or settings.email_from,
        base=base_url(account, DEFAULT_BASE_URL),
        public_key=_public_key(encoded) if encoded else None,
        no_key_reason=refusal_while_unset(account, "webhook_public_key"),
        tolerance=float(account.get("webhook_tolerance_seconds") or DEFAULT_TOLERANCE),
        client=client_for(account),
    )
