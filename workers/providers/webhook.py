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

from service.delivery.providers import Account, Outgoing, ProviderConfigError, Sent
from service.kit.settings import Settings
from workers.providers.http import LIMITS, call, fail, json_body


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
        self.client = client or httpx.Client(timeout=timeout, limits=LIMITS)

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
        return _result(call(self.client, "POST", self.url, content=body, headers=headers))


def _result(response: httpx.Response) -> Sent:
    if not response.is_success:
        raise fail(response, gone=(410,))
    body = json_body(response)
    found = body.get("id") if isinstance(body, dict) else None
    return Sent(provider_message_id=str(found) if found is not None else None)


def webhook(channel: str, account: Account, settings: Settings) -> Webhook:
    """Options `url`, `secret` and `timeout`; an account without them uses LIFELINE_WEBHOOK_URL,
    LIFELINE_WEBHOOK_SECRET and LIFELINE_WEBHOOK_TIMEOUT_SECONDS."""
    url = account.get("url", settings.webhook_url)
    if not url:
        raise ProviderConfigError(
            f"the {account.name} provider needs LIFELINE_WEBHOOK_URL (or option 'url'): the "
            "address it POSTs messages to"
        )
    secret = account.get("secret") or (
        settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    )
    timeout = float(account.get("timeout") or settings.webhook_timeout_seconds)
    provider = Webhook(channel, url, secret=secret.encode() if secret else None, timeout=timeout)
    provider.name = account.name
    return provider


def webhook_email(account: Account, settings: Settings) -> Webhook:
    return webhook("email", account, settings)


def webhook_sms(account: Account, settings: Settings) -> Webhook:
    return webhook("sms", account, settings)


def webhook_push(account: Account, settings: Settings) -> Webhook:
    return webhook("push", account, settings)
