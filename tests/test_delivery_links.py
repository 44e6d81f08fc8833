"""Unsubscribe and preference links: signed, expiring tokens that need no login."""

from __future__ import annotations

import hashlib
import json

import pytest
from itsdangerous import URLSafeTimedSerializer, base64_decode, base64_encode

from service.delivery import tracking
from service.delivery.links import LINK_LIFETIME_SECONDS, LinkClaims, sign, verify
from service.delivery.tracking import Hit

KEY = b"deployment-key"
CLAIMS = LinkClaims(profile_id=42, channel="email", topic="retention", message_id=7)
NOW = 1_800_000_000.0


def test_a_signed_token_verifies_to_its_claims_until_it_expires() -> None:
    token = sign(KEY, CLAIMS, now=NOW)
    assert verify(KEY, token, now=NOW) == CLAIMS
    assert verify(KEY, token, now=NOW + LINK_LIFETIME_SECONDS - 1) == CLAIMS
    assert verify(KEY, token, now=NOW + LINK_LIFETIME_SECONDS + 1) is None


def test_a_token_made_with_another_key_does_not_verify() -> None:
    assert verify(KEY, sign(b"someone else's key", CLAIMS, now=NOW), now=NOW) is None


def test_a_token_with_changed_claims_does_not_verify() -> None:
    payload, timestamp, signature = sign(KEY, CLAIMS, now=NOW).split(".")
    data = json.loads(base64_decode(payload))

    def token(claims: dict[str, object], signed_at: str = timestamp) -> str:
        text = json.dumps(claims, separators=(",", ":"))
        return f"{base64_encode(text).decode()}.{signed_at}.{signature}"

    assert verify(KEY, token(data), now=NOW) == CLAIMS  # the forging itself is sound
    for change in ({"p": 43}, {"t": "activation"}, {"m": 8}):
        assert verify(KEY, token({**data, **change}), now=NOW) is None, change
    # Nor does a token whose time of signing was moved later, to make it live longer.
    later = base64_encode(int(NOW + 86400).to_bytes(4, "big")).decode()
    assert verify(KEY, token(data, signed_at=later), now=NOW + 86400) is None


def test_a_token_of_another_kind_does_not_verify() -> None:
    """Tokens of the same key for other uses, such as tracked links, are not link tokens."""
    data = {"p": 42, "c": "email", "t": "retention", "m": 7}
    other_salt = URLSafeTimedSerializer(
        KEY, salt="another use", signer_kwargs={"digest_method": hashlib.sha256}
    )
    assert verify(KEY, other_salt.dumps(data)) is None
    assert verify(KEY, tracking.sign(KEY, Hit(7)), now=NOW) is None
    assert verify(KEY, tracking.sign(KEY, Hit(7, "https://shop.example/")), now=NOW) is None


@pytest.mark.parametrize("token", ["", ".", "no-dot", "a.b.c", "é.é", "eyJwIjoxfQ.AAAA", "!!!.???"])
def test_garbage_does_not_verify(token: str) -> None:
    assert verify(KEY, token, now=NOW) is None
