"""Links in messages sent before tokens were signed with itsdangerous still work: unsubscribe
and preference links until they expire, tracked links and open images for ever. The tokens
are minted by the code of that time (tests.legacy_tokens)."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from sqlalchemy.engine import Engine

from service.delivery import links, tracking
from service.delivery.links import LINK_LIFETIME_SECONDS, LinkClaims
from service.delivery.tracking import Hit
from tests.helpers.consent import ONE_CLICK, SECRET, add_message, add_user, subscriptions
from tests.legacy_tokens import sign_link, sign_tracking

KEY = b"deployment-key"
CLAIMS = LinkClaims(profile_id=42, channel="email", topic="retention", message_id=7)
NOW = 1_800_000_000.0
CLICK = Hit(5, "https://shop.example/start?a=1&b=2")


def forged(token: str, **change: object) -> str:
    """The token with changed claims and its original signature."""
    payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    text = json.dumps({**data, **change}, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode() + "." + signature


def test_a_legacy_link_verifies_until_it_expires() -> None:
    token = sign_link(KEY, CLAIMS, now=NOW)
    assert links.verify(KEY, token, now=NOW) == CLAIMS
    assert links.verify(KEY, token, now=NOW + LINK_LIFETIME_SECONDS - 1) == CLAIMS
    assert links.verify(KEY, token, now=NOW + LINK_LIFETIME_SECONDS + 1) is None


def test_a_tampered_legacy_link_does_not_verify() -> None:
    token = sign_link(KEY, CLAIMS, now=NOW)
    assert links.verify(KEY, forged(token), now=NOW) == CLAIMS  # the forging itself is sound
    expiry = NOW + LINK_LIFETIME_SECONDS
    for change in ({"p": 43}, {"t": "activation"}, {"m": 8}, {"e": int(expiry) + 86400}):
        assert links.verify(KEY, forged(token, **change), now=NOW) is None, change
    payload, signature = token.split(".")
    assert links.verify(KEY, f"{payload}.{signature[:-2]}", now=NOW) is None
    assert links.verify(KEY, sign_link(b"someone else's key", CLAIMS, now=NOW), now=NOW) is None


def test_legacy_tracking_tokens_verify_as_their_kind_only() -> None:
    click, opened = sign_tracking(KEY, CLICK), sign_tracking(KEY, Hit(5))
    assert tracking.verify(KEY, click, click=True) == CLICK
    assert tracking.verify(KEY, opened, click=False) == Hit(5)
    assert tracking.verify(KEY, click, click=False) is None
    assert tracking.verify(KEY, opened, click=True) is None
    # Neither a legacy link token nor a legacy tracking token is valid as the other.
    unsubscribe = sign_link(KEY, LinkClaims(1, "email", "recall", 5))
    assert tracking.verify(KEY, unsubscribe, click=True) is None
    assert tracking.verify(KEY, unsubscribe, click=False) is None
    assert links.verify(KEY, click) is None
    assert links.verify(KEY, opened) is None
    script = sign_tracking(KEY, Hit(5, "javascript:alert(1)"))
    assert tracking.verify(KEY, script, click=True) is None


def test_a_tampered_legacy_tracking_token_does_not_verify() -> None:
    click = sign_tracking(KEY, CLICK)
    assert tracking.verify(KEY, forged(click), click=True) == CLICK  # the forging is sound
    assert tracking.verify(KEY, forged(click, u="https://evil.example/"), click=True) is None
    assert tracking.verify(KEY, forged(click, m=6), click=True) is None
    payload, signature = click.split(".")
    assert tracking.verify(KEY, f"{payload}.{signature[:-2]}", click=True) is None
    assert tracking.verify(KEY, sign_tracking(b"another key", CLICK), click=True) is None


async def test_a_legacy_unsubscribe_link_still_unsubscribes(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    message_id = add_message(engine, profile, rule="winback", status="sent")
    token = sign_link(SECRET, LinkClaims(profile, "email", "recall", message_id))

    page = await client.get(f"/v1/preferences/{token}")
    assert page.status_code == 200, page.text
    response = await client.post(
        f"/v1/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
    )
    assert response.status_code == 200, response.text
    assert subscriptions(engine) == [(profile, "email", "recall", False, "unsubscribe_link")]


@pytest.mark.parametrize("kind", ["expired", "tampered"])
async def test_an_expired_or_tampered_legacy_link_changes_nothing(
    client: httpx.AsyncClient, engine: Engine, kind: str
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    claims = LinkClaims(profile, "email", "recall", None)
    token = {
        "expired": sign_link(SECRET, claims, now=time.time() - LINK_LIFETIME_SECONDS - 60),
        "tampered": forged(sign_link(SECRET, claims), t="*"),
    }[kind]
    response = await client.post(
        f"/v1/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
    )
    assert response.status_code == 400
    assert "invalid or has expired" in response.text
    assert subscriptions(engine) == []


async def test_a_legacy_tracked_link_still_redirects(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/t/c/{sign_tracking(SECRET, CLICK)}")
    assert (response.status_code, response.headers["location"]) == (302, CLICK.url)
    evil = forged(sign_tracking(SECRET, CLICK), u="https://evil.example/")
    response = await client.get(f"/v1/t/c/{evil}")
    assert response.status_code == 400
    assert "location" not in response.headers
