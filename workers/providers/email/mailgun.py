"""Mailgun email: the Messages API, and its signed webhooks for results.

Options (an account named `mailgun` reads them from LIFELINE_MAILGUN_<OPTION>):
- `api_key` (LIFELINE_MAILGUN_API_KEY), required: HTTP basic auth as user `api`.
- `domain` (LIFELINE_MAILGUN_DOMAIN), required: the sending domain, e.g. mg.acme.example.
- `from` (LIFELINE_MAILGUN_FROM): the sender, else LIFELINE_EMAIL_FROM.
- `base_url` (LIFELINE_MAILGUN_BASE_URL): default https://api.mailgun.net; a domain in the EU
  region needs https://api.eu.mailgun.net; `timeout`.
- `webhook_signing_key` (LIFELINE_MAILGUN_WEBHOOK_SIGNING_KEY): the HTTP webhook signing key
  of the Mailgun account. Without it every webhook is refused.
- `webhook_tolerance_seconds` (LIFELINE_MAILGUN_WEBHOOK_TOLERANCE_SECONDS): how far a signed
  timestamp may be from now, default 600.

Errors: 429 (honouring Retry-After), 5xx and timeouts are retryable; 400 (a bad field), 401
(a wrong key), 404 (an unknown domain) and other 4xx are permanent, with Mailgun's message. A
suppressed address is not refused at send time: Mailgun reports it as a failed event.

Webhook: each request carries {timestamp, token, signature}, the signature being the hex
HMAC-SHA256 of timestamp + token under the signing key. It is compared in constant time, and a
timestamp further from now than the tolerance (a replayed capture) is rejected. The signature
does not cover the body, so a captured signature block could carry a forged body within the
tolerance: as Mailgun advises, each token is accepted once. Tokens are remembered in memory
until their timestamp leaves the tolerance, so the record is per API process: behind several
processes a replay that reaches another process inside the window still passes.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import threading
import time
from typing import Any

import httpx

from service.delivery.providers import (
    Account,
    Inbound,
    Outgoing,
    Report,
    ReportStatus,
    Sent,
    WebhookRejected,
    WebhookResult,
)
from service.kit.settings import Settings
from workers.providers.common import (
    epoch_time,
    mapping_or_empty,
    our_message_id,
    refusal_while_unset,
    text_or_none,
)
from workers.providers.http import base_url, call, client_for, fail, json_body

DEFAULT_BASE_URL = "https://api.mailgun.net"
DEFAULT_TOLERANCE = 600.0
METADATA_KEY = "lifeline_message_id"

# `failed` is decided by its severity: a temporary failure is retried by Mailgun, not reported.
STATUSES: dict[str, ReportStatus] = {
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
}


class Mailgun:
    # Mailgun takes no idempotency key: a send repeated after an unknown outcome may arrive
    # twice.
    idempotent = False
    channel = "email"

    def __init__(
        self,
        name: str,
        api_key: str,
        domain: str,
        sender: str,
        *,
        base: str = DEFAULT_BASE_URL,
        signing_key: str | None = None,
        no_key_reason: str = "webhooks are refused: no signing key is set",
        tolerance: float = DEFAULT_TOLERANCE,
        client: httpx.Client | None = None,
    ):
        self.name = name
        self.api_key = api_key
        self.sender = sender
        self.url = f"{base.rstrip('/')}/v3/{domain}/messages"
        self.signing_key = signing_key.encode() if signing_key else None
        self.no_key_reason = no_key_reason
        self.tolerance = tolerance
        self._tokens: set[str] = set()
        self._expiries: list[tuple[float, str]] = []  # a heap: when each token may be forgotten
        self._tokens_lock = threading.Lock()
        self.client = client or httpx.Client(timeout=10.0)

    def send(self, message: Outgoing) -> Sent:
        form = {
            "from": self.sender,
            "to": message.to,
            "subject": message.content.get("subject", ""),
            "text": message.content.get("text", ""),
            # User variables come back in every event of the message.
            f"v:{METADATA_KEY}": str(message.message_id),
        }
        if message.content.get("html"):
            form["html"] = message.content["html"]
        form.update({f"h:{name}": value for name, value in message.headers.items()})
        response = call(self.client, "POST", self.url, data=form, auth=("api", self.api_key))
        if not response.is_success:
            raise fail(response, _message(response))
        body = json_body(response)
        found = body.get("id") if isinstance(body, dict) else None
        # "<20240101.1@mg.acme.example>": events name the message without the brackets.
        return Sent(provider_message_id=found.strip("<>") if isinstance(found, str) else None)

    def verify_webhook(self, request: Inbound) -> None:
        if self.signing_key is None:
            raise WebhookRejected(self.no_key_reason)
        try:
            block = request.json().get("signature")
            timestamp, token, signature = (block[k] for k in ("timestamp", "token", "signature"))
        except (ValueError, AttributeError, TypeError, KeyError):
            raise WebhookRejected("the Mailgun signature block is missing") from None
        if not all(isinstance(v, str) for v in (timestamp, token, signature)):
            raise WebhookRejected("the Mailgun signature block is malformed")
        try:
            signed_at = int(timestamp)
        except ValueError:
            raise WebhookRejected("the Mailgun timestamp is not a number") from None
        if abs(time.time() - signed_at) > self.tolerance:
            raise WebhookRejected("the Mailgun signature is too old (or from the future)")
        expected = hmac.new(self.signing_key, (timestamp + token).encode(), hashlib.sha256)
        if not hmac.compare_digest(expected.hexdigest(), signature.lower()):
            raise WebhookRejected("the Mailgun signature does not match")
        if not self._first_use(token, signed_at + self.tolerance):
            raise WebhookRejected("the Mailgun token was already used")

    def _first_use(self, token: str, forget_at: float) -> bool:
        """Record `token`; False if it was seen before. A token is forgotten once its timestamp
        is outside the tolerance, when the timestamp check alone refuses it."""
        now = time.time()
        with self._tokens_lock:
            while self._expiries and self._expiries[0][0] < now:
                self._tokens.discard(heapq.heappop(self._expiries)[1])
            if token in self._tokens:
                return False
            self._tokens.add(token)
            heapq.heappush(self._expiries, (forget_at, token))
            return True

    def parse_webhook(self, request: Inbound) -> WebhookResult:
        try:
            data = request.json()
        except ValueError as exc:
            raise ValueError(f"a Mailgun webhook is JSON: {exc}") from exc
        event = data.get("event-data") if isinstance(data, dict) else None
        if not isinstance(event, dict):
            raise ValueError("a Mailgun webhook carries an 'event-data' object")
        report = _report(event)
        return WebhookResult(reports=[report] if report else [])


def _message(response: httpx.Response) -> str | None:
    body = json_body(response)
    found = body.get("message") if isinstance(body, dict) else None
    return found if isinstance(found, str) and found else None


def _report(event: dict[str, Any]) -> Report | None:
    kind = event.get("event")
    if kind == "failed":
        # A permanent failure is a hard bounce (or an address Mailgun already suppresses).
        status: ReportStatus | None = "bounced" if event.get("severity") == "permanent" else None
    else:
        status = STATUSES.get(kind) if isinstance(kind, str) else None
    event_id = event.get("id")
    if status is None or not isinstance(event_id, str) or not event_id:
        return None
    variables = mapping_or_empty(event.get("user-variables"))
    message_id = mapping_or_empty(mapping_or_empty(event.get("message")).get("headers")).get(
        "message-id"
    )
    return Report(
        event_id=event_id,
        status=status,
        at=epoch_time(event.get("timestamp")),
        message_id=our_message_id(variables.get(METADATA_KEY)),
        provider_message_id=message_id.strip("<>") if isinstance(message_id, str) else None,
        address=text_or_none(event.get("recipient")),
        detail=_failure(event) if status == "bounced" else None,
        url=text_or_none(event.get("url")) if status == "clicked" else None,
    )


def _failure(event: dict[str, Any]) -> str | None:
    """What the receiving server said, else Mailgun's reason (e.g. suppress-bounce)."""
    delivery = mapping_or_empty(event.get("delivery-status"))
    return (
        text_or_none(delivery.get("description"))
        or text_or_none(delivery.get("message"))
        or text_or_none(event.get("reason"))
    )


def mailgun(account: Account, settings: Settings) -> Mailgun:
    """Sending needs `api_key` and `domain`; receiving webhooks needs `webhook_signing_key`."""
    return Mailgun(
        account.name,
        account.require("api_key"),
        account.require("domain"),
        account.get("from") or settings.email_from,
        base=base_url(account, DEFAULT_BASE_URL),
        signing_key=account.get("webhook_signing_key"),
        no_key_reason=refusal_while_unset(account, "webhook_signing_key"),
        tolerance=float(account.get("webhook_tolerance_seconds") or DEFAULT_TOLERANCE),
        client=client_for(account),
    )
