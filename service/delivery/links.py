"""Signed, expiring links for unsubscribing and managing preferences, with no login, and every
public URL path that Lifeline puts in a message.

A link token is an itsdangerous URLSafeTimedSerializer token of the claims: nothing in it is
secret; the signature makes it unforgeable, its timestamp makes old links stop working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy.engine import make_url

from service.kit.settings import Settings

LINK_LIFETIME_SECONDS = 90 * 24 * 3600
EMBEDDED_SECRET_FILE = Path("lifeline.secret")
# Each kind of token has its own salt, so a token of one kind is never valid as another.
LINK_SALT = "lifeline.links"

UNSUBSCRIBE_PATH = "/v1/unsubscribe/{token}"
PREFERENCES_PATH = "/v1/preferences/{token}"
CLICK_PATH = "/v1/t/c/{token}"  # service.delivery.tracking
OPEN_PATH = "/v1/t/o/{token}"


def unsubscribe_url(public_url: str, token: str) -> str:
    return public_url + UNSUBSCRIBE_PATH.format(token=token)


def preferences_url(public_url: str, token: str) -> str:
    return public_url + PREFERENCES_PATH.format(token=token)


def click_url(public_url: str, token: str) -> str:
    return public_url + CLICK_PATH.format(token=token)


def open_url(public_url: str, token: str) -> str:
    return public_url + OPEN_PATH.format(token=token)


class MissingSecret(RuntimeError):
    pass


def secret_key(settings: Settings) -> bytes:
    if settings.secret_key is not None and settings.secret_key.get_secret_value():
        return settings.secret_key.get_secret_value().encode()
    if make_url(settings.database_url).get_backend_name() != "sqlite":
        raise MissingSecret("set LIFELINE_SECRET_KEY: it signs the unsubscribe links in messages")
    if not EMBEDDED_SECRET_FILE.exists():
        EMBEDDED_SECRET_FILE.touch(mode=0o600)
        EMBEDDED_SECRET_FILE.write_text(secrets.token_urlsafe(32))
    return EMBEDDED_SECRET_FILE.read_text().strip().encode()


@dataclass(frozen=True)
class LinkClaims:
    profile_id: int
    channel: str
    topic: str
    message_id: int | None


class _Signer(TimestampSigner):
    """A TimestampSigner whose clock can be set, so that a token can be signed or checked as
    at a given time."""

    def __init__(self, *args: Any, now: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.now = now

    def get_timestamp(self) -> int:
        return int(self.now or time.time())


def _serializer(key: bytes, now: float | None) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        key,
        salt=LINK_SALT,
        signer=_Signer,
        signer_kwargs={"digest_method": hashlib.sha256, "now": now},
    )


def sign(key: bytes, claims: LinkClaims, now: float | None = None) -> str:
    data = {"p": claims.profile_id, "c": claims.channel, "t": claims.topic, "m": claims.message_id}
    return _serializer(key, now).dumps(data)


def verify(key: bytes, token: str, now: float | None = None) -> LinkClaims | None:
    """The claims of a genuine, unexpired token; None for anything else."""
    try:
        data = _serializer(key, now).loads(token, max_age=LINK_LIFETIME_SECONDS)
    except SignatureExpired:
        return None
    except BadData:
        return _verify_legacy(key, token, now)
    return LinkClaims(data["p"], data["c"], data["t"], data["m"])


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _verify_legacy(key: bytes, token: str, now: float | None) -> LinkClaims | None:
    """`verify` for tokens of the format before itsdangerous: base64url(JSON claims with an
    expiry "e") "." base64url(HMAC-SHA256 of the JSON). It exists for the links in messages
    sent before the change; once the change has been deployed for LINK_LIFETIME_SECONDS (90
    days) every such link has expired: then delete it, with `sign_link` in
    tests/legacy_tokens.py and the tests of legacy links in tests/test_legacy_tokens.py."""
    try:
        payload_text, signature_text = token.split(".", 1)
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except (ValueError, UnicodeEncodeError):
        return None
    if not hmac.compare_digest(hmac.new(key, payload, hashlib.sha256).digest(), signature):
        return None
    try:
        data = json.loads(payload)
        if data["e"] < (now or time.time()):
            return None
        return LinkClaims(int(data["p"]), str(data["c"]), str(data["t"]), data.get("m"))
    except (ValueError, KeyError, TypeError):
        return None
