"""Tokens as Lifeline signed them before itsdangerous, to check that links in messages sent
before the change still work (service.delivery.links._verify_legacy and
service.delivery.tracking._verify_legacy).

The functions are copied verbatim from service/delivery/links.py and tracking.py of the last
commit before the change (3e5fd3e); only the two `sign`s are renamed, as they share this
module. Delete `sign_link` with the links' legacy verifier, 90 days after the change is
deployed; the tracking one stays, as tracking tokens never expire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from service.delivery.links import LinkClaims
from service.delivery.tracking import Hit

LINK_LIFETIME_SECONDS = 90 * 24 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_link(key: bytes, claims: LinkClaims, now: float | None = None) -> str:
    payload = json.dumps(
        {
            "p": claims.profile_id,
            "c": claims.channel,
            "t": claims.topic,
            "m": claims.message_id,
            "e": int((now or time.time()) + LINK_LIFETIME_SECONDS),
        },
        separators=(",", ":"),
    ).encode()
    signature = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def tracking_key(key: bytes) -> bytes:
    return hmac.new(key, b"lifeline tracking links", hashlib.sha256).digest()


def sign_tracking(key: bytes, hit: Hit) -> str:
    claims: dict[str, object] = {"m": hit.message_id}
    if hit.url is not None:
        claims["u"] = hit.url
    payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()
    signature = hmac.new(tracking_key(key), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"
