"""Unsubscribe and preference links: signed, expiring tokens that need no login."""

from __future__ import annotations

import base64
import json

import pytest

from service.delivery.links import LINK_LIFETIME_SECONDS, LinkClaims, sign, verify

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
    payload, signature = sign(KEY, CLAIMS, now=NOW).split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    for change in ({"p": 43}, {"t": "activation"}, {"e": data["e"] + 86400}):
        forged = json.dumps({**data, **change}, separators=(",", ":")).encode()
        token = base64.urlsafe_b64encode(forged).rstrip(b"=").decode() + "." + signature
        assert verify(KEY, token, now=NOW) is None, change


@pytest.mark.parametrize("token", ["", ".", "no-dot", "a.b.c", "é.é", "eyJwIjoxfQ.AAAA", "!!!.???"])
def test_garbage_does_not_verify(token: str) -> None:
    assert verify(KEY, token, now=NOW) is None
