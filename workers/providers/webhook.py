"""The webhook provider: POSTs each message as JSON to one URL, for any channel.

It fits a relay of your own or a provider's HTTP API behind a small adapter. The receiver
gets an Idempotency-Key (the same for every attempt at one message) and, with a secret set,
an HMAC-SHA256 signature of the exact body, so it can verify the sender and drop repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx

from service.delivery.providers import Outgoing, ProviderError, Sent
from service.kit.settings import Settings

EXCERPT_CHARS = 200


class Webhook:
    # The receiver is told the idempotency key: a send repeated after an unknown outcome
    # (a timeout, a worker killed mid-call) reaches the person once.
    idempotent = True

    def __init__(
        self,
        channel: str,
        url: str,
        *,
        secret: bytes | None = None,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ):
        self.name = f"webhook-{channel}"
        self.channel = channel
        self.url = url
        self.secret = secret
        # One client per provider: its connections are kept alive across messages.
        self.client = client or httpx.Client(timeout=timeout)

    def send(self, message: Outgoing) -> Sent:
        body = json.dumps(
            {
                "message_id": message.message_id,
                "channel": message.channel,
                "to": message.to,
                "content": message.content,
                "headers": message.headers,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.idempotency_key,
        }
        if self.secret is not None:
            digest = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            headers["X-Lifeline-Signature"] = f"sha256={digest}"
        try:
            response = self.client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise ProviderError("retryable", f"timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise ProviderError("retryable", f"{type(exc).__name__}: {exc}") from exc
        return _result(response)


def _result(response: httpx.Response) -> Sent:
    status = response.status_code
    if 200 <= status < 300:
        return Sent(provider_message_id=_id(response))
    reason = f"HTTP {status}: {_excerpt(response)}"
    if status == 429:
        raise ProviderError("retryable", reason, _retry_after(response))
    if status >= 500:
        raise ProviderError("retryable", reason)
    if status == 410:
        raise ProviderError("address_gone", reason)
    raise ProviderError("permanent", reason)


def _id(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    found = body.get("id") if isinstance(body, dict) else None
    return str(found) if found is not None else None


def _excerpt(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds; an HTTP date (rare for 429) falls back to our own back-off."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def webhook(channel: str, settings: Settings) -> Webhook:
    if not settings.webhook_url:
        raise ValueError(
            f"the webhook-{channel} provider needs LIFELINE_WEBHOOK_URL: the address it "
            "POSTs messages to"
        )
    secret = (
        settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else None
    )
    return Webhook(
        channel, settings.webhook_url, secret=secret, timeout=settings.webhook_timeout_seconds
    )


def webhook_email(settings: Settings) -> Webhook:
    return webhook("email", settings)


def webhook_sms(settings: Settings) -> Webhook:
    return webhook("sms", settings)


def webhook_push(settings: Settings) -> Webhook:
    return webhook("push", settings)
