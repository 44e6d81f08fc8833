"""Web Push (RFC 8030): push to browsers, through whichever push service the browser chose.

The device token is the browser's PushSubscription as JSON: {"endpoint": ..., "keys":
{"p256dh": ..., "auth": ...}}. The payload is encrypted for that subscription (aes128gcm,
RFC 8291) and the request is signed with VAPID (RFC 8292), so no push service account is needed.

Options (an account named `webpush` reads them from LIFELINE_WEBPUSH_<OPTION>):
- `vapid_private_key` (LIFELINE_WEBPUSH_VAPID_PRIVATE_KEY): the application server's P-256
  key, as PEM or as the base64url raw key web-push tools print; or `vapid_private_key_file`
  (LIFELINE_WEBPUSH_VAPID_PRIVATE_KEY_FILE). Its public half is the applicationServerKey the
  site subscribed with.
- `vapid_subject` (LIFELINE_WEBPUSH_VAPID_SUBJECT): a mailto: or https: contact for the push
  service's operators.
- `ttl` (LIFELINE_WEBPUSH_TTL): seconds the push service keeps an undelivered message;
  default 2419200 (four weeks, the longest the big push services keep one).
- `urgency` (LIFELINE_WEBPUSH_URGENCY): very-low, low, normal or high; unset: the service's
  default (normal).
- `allow_http` (LIFELINE_WEBPUSH_ALLOW_HTTP): accept http:// endpoints and endpoints on
  loopback or private addresses; for local tests only, since a real push service is always
  https on a public address. `timeout`.

Endpoints come from browsers through the devices API, so anyone can register one. Before each
send the endpoint's host is resolved and the message is refused (permanent) unless every
address is public (ipaddress is_global): the worker must not POST into our own network. DNS
can change between that check and the connection, so this stops plain private endpoints, not
a name rebound in between.

Errors: 404 and 410 are address_gone (the subscription expired or was withdrawn); 429, 5xx and
timeouts are retryable, honouring Retry-After; 413 (payload too large), other 4xx and a token
that is not a subscription are permanent.

No webhook: push services report gone subscriptions in the answer to the next send.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import http_ece  # type: ignore[import-untyped]  # ships no type hints
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
    load_pem_private_key,
)

from service.delivery.providers import Account, Outgoing, ProviderConfigError, ProviderError, Sent
from service.kit.settings import Settings
from workers.providers.common import inline_or_file
from workers.providers.http import call, client_for, fail

DEFAULT_TTL = 2419200
VAPID_LIFETIME = 12 * 3600  # RFC 8292 allows at most 24 hours
URGENCIES = ("very-low", "low", "normal", "high")
UNCOMPRESSED = (Encoding.X962, PublicFormat.UncompressedPoint)  # how Web Push writes P-256 keys


class WebPush:
    # Push services take no idempotency key: a send repeated after an unknown outcome may
    # arrive twice.
    idempotent = False
    channel = "push"

    def __init__(
        self,
        name: str,
        vapid_key: ec.EllipticCurvePrivateKey,
        subject: str,
        *,
        ttl: int = DEFAULT_TTL,
        urgency: str | None = None,
        allow_http: bool = False,
        client: httpx.Client | None = None,
    ):
        self.name = name
        self.vapid_key = vapid_key
        self.subject = subject
        self.public_key = _b64(vapid_key.public_key().public_bytes(*UNCOMPRESSED))
        self.ttl = ttl
        self.urgency = urgency
        self.allow_http = allow_http
        self.client = client or httpx.Client(timeout=10.0)

    def send(self, message: Outgoing) -> Sent:
        endpoint, p256dh, auth = self.subscription(message.to)
        if not self.allow_http:
            check_public(endpoint)
        body: bytes = http_ece.encrypt(
            json.dumps(self.payload(message), ensure_ascii=False, separators=(",", ":")).encode(),
            # A fresh sender key per message, as RFC 8291 asks: keys are never reused.
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=p256dh,
            auth_secret=auth,
            version="aes128gcm",
        )
        headers = {
            "TTL": str(self.ttl),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": f"vapid t={self.vapid_token(endpoint)}, k={self.public_key}",
        }
        if self.urgency:
            headers["Urgency"] = self.urgency
        response = call(self.client, "POST", endpoint, content=body, headers=headers)
        if not response.is_success:
            raise fail(response, gone=(404, 410))
        # The push service names the message it queued by its URL (RFC 8030 section 5).
        return Sent(provider_message_id=response.headers.get("Location"))

    @staticmethod
    def payload(message: Outgoing) -> dict[str, Any]:
        content = message.content
        return {
            "title": content.get("title", ""),
            "body": content.get("body", ""),
            "deep_link": content.get("deep_link"),
            "data": {
                key.removeprefix("data."): value
                for key, value in content.items()
                if key.startswith("data.")
            },
            "lifeline_message_id": str(message.message_id),
        }

    def subscription(self, token: str) -> tuple[str, bytes, bytes]:
        """The endpoint and the keys of a PushSubscription; anything else is permanent: it
        will not become deliverable by trying again."""
        try:
            found = json.loads(token)
            endpoint = found["endpoint"]
            p256dh = _unb64(found["keys"]["p256dh"])
            auth = _unb64(found["keys"]["auth"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ProviderError(
                "permanent", "the device token is not a Web Push subscription (JSON)"
            ) from None
        scheme = urlsplit(endpoint).scheme if isinstance(endpoint, str) else ""
        if scheme != "https" and not (self.allow_http and scheme == "http"):
            raise ProviderError("permanent", "the subscription's endpoint is not an https URL")
        if len(p256dh) != 65 or len(auth) < 16:
            raise ProviderError("permanent", "the subscription's p256dh or auth key is malformed")
        return endpoint, p256dh, auth

    def vapid_token(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(time.time()) + VAPID_LIFETIME,
            "sub": self.subject,
        }
        return jwt.encode(claims, self.vapid_key, algorithm="ES256")


def check_public(endpoint: str) -> None:
    """Every address the endpoint's host resolves to is public; the reason names the host only,
    since the rest of the URL identifies the subscriber."""
    parts = urlsplit(endpoint)
    host = parts.hostname
    if not host:
        raise ProviderError("permanent", "the subscription's endpoint has no host")
    try:
        found = socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except UnicodeError:
        raise ProviderError("permanent", "the subscription's endpoint host is malformed") from None
    except OSError as exc:  # a DNS failure may pass, like any other connection failure
        raise ProviderError(
            "retryable", f"could not resolve the push service {host!r}: {exc}"
        ) from exc
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found}
    if not addresses or not all(address.is_global for address in addresses):
        raise ProviderError(
            "permanent", f"the push service {host!r} is not on a public address: refused"
        )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _vapid_key(account: Account) -> ec.EllipticCurvePrivateKey:
    text, where = inline_or_file(
        account, "vapid_private_key", "vapid_private_key_file", "a VAPID key"
    )
    text = text.strip().replace("\\n", "\n")
    key: object = None
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_private_key(text.encode(), password=None)
        else:
            raw = _unb64(text)
            key = (
                ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
                if len(raw) == 32
                else load_der_private_key(raw, password=None)
            )
    except (ValueError, TypeError, binascii.Error):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ProviderConfigError(
            f"provider account {account.name!r}: {where} is not a P-256 private key"
        )
    return key


def webpush(account: Account, settings: Settings) -> WebPush:
    subject = account.require("vapid_subject")
    if not subject.startswith(("mailto:", "https:")):
        raise ProviderConfigError(
            f"provider account {account.name!r}: vapid_subject is a mailto: or https: URI"
        )
    urgency = account.get("urgency")
    if urgency is not None and urgency not in URGENCIES:
        raise ProviderConfigError(
            f"provider account {account.name!r}: urgency is one of {', '.join(URGENCIES)}"
        )
    ttl = account.get("ttl", str(DEFAULT_TTL)) or str(DEFAULT_TTL)
    if not ttl.isdigit():
        raise ProviderConfigError(f"provider account {account.name!r}: ttl is whole seconds")
    allow_http = (account.get("allow_http") or "").lower() in ("1", "true", "yes")
    return WebPush(
        account.name,
        _vapid_key(account),
        subject,
        ttl=int(ttl),
        urgency=urgency,
        allow_http=allow_http,
        client=client_for(account),
    )
