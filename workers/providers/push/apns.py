"""Apple Push Notification service: push to iOS (and macOS) apps, over HTTP/2.

Options (an account named `apns` reads them from LIFELINE_APNS_<OPTION>):
- `key_file` (LIFELINE_APNS_KEY_FILE): path to the .p8 signing key from Apple's developer
  site, or `key` (LIFELINE_APNS_KEY): its PEM text.
- `key_id` (LIFELINE_APNS_KEY_ID) and `team_id` (LIFELINE_APNS_TEAM_ID): the key's id and your
  team's id, named in every provider token.
- `topic` (LIFELINE_APNS_TOPIC): the app's bundle id.
- `environment` (LIFELINE_APNS_ENVIRONMENT): `production` (default) or `sandbox` for
  development builds; `base_url` overrides both. `timeout`.

APNs speaks HTTP/2 only; the client never offers HTTP/1.1. Each request carries a provider
token (ES256 JWT) that is signed once and reused for 40 minutes: Apple answers
TooManyProviderTokenUpdates to a new token within 20 minutes of the last and
ExpiredProviderToken to one older than 60, so 40 sits in the middle of the window with room
for clock skew on either side.

Each message gets an apns-id derived from our message id, so a retry names the same
notification. Errors: 410 Unregistered and 400 BadDeviceToken are address_gone (the app was
removed, or the token is not one); 403 ExpiredProviderToken drops the token and is retryable;
429, 500, 503 and timeouts are retryable; other 400s (PayloadTooLarge, BadTopic, ...) and 403s
(InvalidProviderToken, ...) are permanent with Apple's reason.

No webhook: APNs reports gone devices in the answer to the next send.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from service.delivery.providers import Account, Outgoing, ProviderConfigError, ProviderError, Sent
from service.kit.settings import Settings
from workers.providers.common import inline_or_file
from workers.providers.http import base_url, call, client_for, fail, json_body

PRODUCTION = "https://api.push.apple.com"
SANDBOX = "https://api.sandbox.push.apple.com"
TOKEN_LIFETIME = 40 * 60.0  # seconds; see the module docstring
# apns-id = uuid5(this namespace, message id): the same message always gets the same apns-id.
APNS_ID_NAMESPACE = uuid.UUID("461ba6fc-7f41-4ec2-8cd9-8fc7805e3a4f")


class Apns:
    # APNs takes no idempotency key (apns-id only names the notification in its answers):
    # a send repeated after an unknown outcome may arrive twice.
    idempotent = False
    channel = "push"

    def __init__(
        self,
        name: str,
        key: ec.EllipticCurvePrivateKey,
        *,
        key_id: str,
        team_id: str,
        topic: str,
        base: str = PRODUCTION,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.name = name
        self.key = key
        self.key_id = key_id
        self.team_id = team_id
        self.topic = topic
        self.base = base.rstrip("/")
        self.client = client or httpx.Client(http1=False, http2=True, timeout=10.0)
        self.clock = clock
        # Dramatiq threads share one token: signing a new one per thread would trip Apple's
        # TooManyProviderTokenUpdates.
        self._lock = threading.Lock()
        self._token: str | None = None
        self._issued_at = 0.0

    def send(self, message: Outgoing) -> Sent:
        token = self.provider_token()
        apns_id = str(uuid.uuid5(APNS_ID_NAMESPACE, str(message.message_id)))
        headers = {
            "authorization": f"bearer {token}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "apns-id": apns_id,
        }
        collapse_id = message.headers.get("apns-collapse-id")
        if collapse_id:
            headers["apns-collapse-id"] = collapse_id
        response = call(
            self.client,
            "POST",
            # quote: a token is hex, but a stray "/" must not reach another of Apple's paths.
            f"{self.base}/3/device/{quote(message.to, safe='')}",
            json=self.payload(message),
            headers=headers,
        )
        if response.is_success:
            return Sent(provider_message_id=response.headers.get("apns-id", apns_id))
        raise self.error(response, token)

    @staticmethod
    def payload(message: Outgoing) -> dict[str, Any]:
        content = message.content
        payload: dict[str, Any] = {
            key.removeprefix("data."): value
            for key, value in content.items()
            if key.startswith("data.")
        }
        if content.get("deep_link"):
            payload["deep_link"] = content["deep_link"]
        # A string, as FCM must send it: the app reads the same type on every platform.
        payload["lifeline_message_id"] = str(message.message_id)
        payload["aps"] = {
            "alert": {"title": content.get("title", ""), "body": content.get("body", "")}
        }
        return payload

    def provider_token(self) -> str:
        with self._lock:
            now = self.clock()
            if self._token is None or now - self._issued_at >= TOKEN_LIFETIME:
                self._token = jwt.encode(
                    {"iss": self.team_id, "iat": int(now)},
                    self.key,
                    algorithm="ES256",
                    headers={"kid": self.key_id},
                )
                self._issued_at = now
            return self._token

    def forget_token(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    def error(self, response: httpx.Response, token: str) -> ProviderError:
        body = json_body(response)
        reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
        status = response.status_code
        if status == 410 or (status == 400 and reason == "BadDeviceToken"):
            return ProviderError("address_gone", f"HTTP {status}: {reason or 'Unregistered'}")
        if status == 403 and reason == "ExpiredProviderToken":
            # Our clock or Apple's drifted: sign a fresh token for the next attempt.
            self.forget_token(token)
            return ProviderError("retryable", f"HTTP 403: {reason}")
        return fail(response, reason or None)


def _signing_key(account: Account) -> ec.EllipticCurvePrivateKey:
    pem, where = inline_or_file(account, "key", "key_file", "its .p8 signing key")
    # A PEM pasted into one environment variable often arrives with literal "\n"s.
    pem = pem.replace("\\n", "\n")
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProviderConfigError(
            f"provider account {account.name!r}: {where} is not an APNs .p8 (EC P-256) key"
        )
    return key


def apns(account: Account, settings: Settings) -> Apns:
    environment = account.get("environment", "production")
    if environment not in ("production", "sandbox"):
        raise ProviderConfigError(
            f"provider account {account.name!r}: environment is 'production' or 'sandbox', "
            f"not {environment!r}"
        )
    return Apns(
        account.name,
        _signing_key(account),
        key_id=account.require("key_id"),
        team_id=account.require("team_id"),
        topic=account.require("topic"),
        base=base_url(account, SANDBOX if environment == "sandbox" else PRODUCTION),
        # HTTP/2 only: over TLS it is negotiated, over plain http (a local relay) it is
        # spoken from the first byte.
        client=client_for(account, http1=False, http2=True),
    )
