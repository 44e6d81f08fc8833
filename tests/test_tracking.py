"""Lifeline's own open and click tracking: emails of tracked rules carry signed links and an
invisible image; following them records the click or open. On SQLite and PostgreSQL."""

from __future__ import annotations

import email
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.engine import Engine

from service.delivery import tracking
from service.delivery.endpoints import links as link_endpoints
from service.delivery.links import LinkClaims, secret_key
from service.delivery.links import sign as sign_unsubscribe
from service.delivery.tracking import Hit
from service.engine.staff_format import Track
from service.kit.settings import Settings
from service.models import Event, Message
from tests.helpers.api import events, send
from tests.helpers.delivery import history, message
from tests.helpers.polling import eventually_async
from tests.helpers.rules import RulePack
from tests.helpers.waiting import EmbeddedWorker, wait_processed

PUBLIC = "https://lifeline.example"
KEY = b"tracking-test-key"
BOTH = Track(clicks=True, opens=True)

RULES = """
rules:
  - id: tracked
    category: activation
    track: true
    trigger: {event: Signed Up}
    steps:
      - send: {channel: email, template: links}
  - id: untracked
    category: retention
    trigger: {event: Order Completed}
    steps:
      - send: {channel: email, template: links}
  - id: step-off
    category: recall
    track: true
    trigger: {event: App Opened}
    steps:
      - send: {channel: email, template: links, track: false}
"""
LINKS_TEMPLATE = """
email:
  subject: "Links"
  html: '<html><body><p><a href="https://shop.example/start?a=1&amp;b=2">Start</a>
    <a href="mailto:help@example.com">Mail us</a> <a href="#top">Top</a></p>
    <p><a href="{{ links.unsubscribe }}">Unsubscribe</a></p></body></html>'
"""
START = "https://shop.example/start?a=1&b=2"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return RulePack(tmp_path / "rules").rules(RULES).template("links", LINKS_TEMPLATE).write()


def links_in(markup: str) -> list[str]:
    return re.findall(r'(?<=\s)href="([^"]*)"', markup, re.IGNORECASE)


def click_hit(url: str) -> Hit | None:
    token = url.removeprefix(f"{PUBLIC}/v1/t/c/")
    return tracking.verify(KEY, token, click=True)


# --- Rewriting ---------------------------------------------------------------------------------


def test_web_links_go_through_lifeline_and_the_others_stay_direct() -> None:
    markup = (
        "<html><head><link href='https://cdn.example/style.css' rel=stylesheet></head><body>"
        '<a href="https://shop.example/a?x=1&amp;y=2">A</a>'
        "<a class='b' href='http://shop.example/b'>B</a>"
        "<A HREF=https://shop.example/c>C</A>"
        '<a data-href="https://shop.example/d" href="HTTPS://shop.example/e">E</a>'
        f'<a href="{PUBLIC}/v1/unsubscribe/tok">Unsubscribe</a>'
        f'<a href="{PUBLIC}/v1/preferences/tok">Preferences</a>'
        '<a href="mailto:help@example.com">Mail</a><a href="tel:+14155550100">Call</a>'
        '<a href="#top">Top</a><a name="top">no link</a>'
        '<img src="https://cdn.example/logo.png" alt="a > b">'
        "</body></html>"
    )
    rewritten = tracking.rewrite(markup, PUBLIC, KEY, 42, Track(clicks=True))

    hrefs = links_in(rewritten)
    tracked, direct = hrefs[:4], hrefs[4:]
    assert [click_hit(url) for url in tracked] == [
        Hit(42, "https://shop.example/a?x=1&y=2"),  # the URL the reader meant, entities undone
        Hit(42, "http://shop.example/b"),
        Hit(42, "https://shop.example/c"),
        Hit(42, "HTTPS://shop.example/e"),
    ]
    assert all(url.startswith(f"{PUBLIC}/v1/t/c/") for url in tracked)
    assert direct == [
        f"{PUBLIC}/v1/unsubscribe/tok",
        f"{PUBLIC}/v1/preferences/tok",
        "mailto:help@example.com",
        "tel:+14155550100",
        "#top",
    ]
    assert "<link href='https://cdn.example/style.css'" in rewritten
    assert 'data-href="https://shop.example/d"' in rewritten
    assert '<img src="https://cdn.example/logo.png" alt="a > b">' in rewritten
    assert "/v1/t/o/" not in rewritten  # no image without opens


def test_the_open_image_goes_before_the_end_of_the_body_only_with_opens() -> None:
    markup = '<html><body><a href="https://shop.example/">Shop</a></body></html>'
    opened = tracking.rewrite(markup, PUBLIC, KEY, 7, Track(opens=True))
    assert links_in(opened) == ["https://shop.example/"]  # opens only: links unchanged
    [image] = re.findall(r"<img [^>]*>", opened)
    assert opened.endswith(image + "</body></html>")
    assert 'width="1" height="1" alt=""' in image
    [src] = re.findall(r'src="([^"]*)"', image)
    token = src.removeprefix(f"{PUBLIC}/v1/t/o/")
    assert tracking.verify(KEY, token, click=False) == Hit(7)

    fragment = tracking.rewrite("<p>Hi</p>", PUBLIC, KEY, 7, BOTH)
    assert re.fullmatch(r"<p>Hi</p><img [^>]*>", fragment)  # no </body>: at the end
    assert tracking.rewrite(markup, PUBLIC, KEY, 7, Track()) == markup


# --- Tokens --------------------------------------------------------------------------------


def test_only_a_token_signed_for_that_url_leads_anywhere() -> None:
    token = tracking.sign(KEY, Hit(5, "https://shop.example/start"))
    assert tracking.verify(KEY, token, click=True) == Hit(5, "https://shop.example/start")

    payload, signature = token.split(".")
    forged = tracking.sign(b"another key", Hit(5, "https://evil.example/"))
    assert tracking.verify(KEY, forged, click=True) is None
    assert tracking.verify(KEY, f"{forged.split('.')[0]}.{signature}", click=True) is None
    flipped = payload[:-3] + ("A" if payload[-3] != "A" else "B") + payload[-2:]
    assert tracking.verify(KEY, f"{flipped}.{signature}", click=True) is None
    assert tracking.verify(KEY, f"{payload}.{signature[:-2]}", click=True) is None
    for junk in ("", ".", "abc", "a.b.c", "%%%.%%%", "é.é"):
        assert tracking.verify(KEY, junk, click=True) is None
    # An open's token is not a link, a link's is not an open's, and an unsubscribe link's
    # token (same secret) is neither.
    assert tracking.verify(KEY, tracking.sign(KEY, Hit(5)), click=True) is None
    assert tracking.verify(KEY, token, click=False) is None
    unsubscribe = sign_unsubscribe(KEY, LinkClaims(1, "email", "recall", 5))
    assert tracking.verify(KEY, unsubscribe, click=True) is None
    assert tracking.verify(KEY, unsubscribe, click=False) is None
    # Only web URLs are ever signed; a token for anything else leads nowhere.
    assert tracking.verify(KEY, tracking.sign(KEY, Hit(5, "javascript:alert(1)")), True) is None


# --- End to end ----------------------------------------------------------------------------


async def sent_email(
    settings: Settings,
    client: httpx.AsyncClient,
    embedded: EmbeddedWorker,
    write_key: str,
    event: str,
) -> tuple[Message, str]:
    batch = [
        {"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com"}},
        {"type": "track", "userId": "u-1", "event": event},
    ]
    await send(client, write_key, "batch", {"batch": batch})
    messages = await embedded.settled(1)
    [sent] = [m for m in messages if m.status == "sent" and m.provider_message_id]
    eml = (settings.outbox_dir / str(sent.provider_message_id)).read_bytes()
    parsed = email.message_from_bytes(eml, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    part = parsed.get_body(("html",))
    assert part is not None
    return sent, str(part.get_content())


def tracking_events(engine: Engine) -> list[Event]:
    return [e for e in events(engine) if e.name in ("Email Opened", "Email Link Clicked")]


async def wait_tracking_events(engine: Engine, count: int) -> list[Event]:
    await eventually_async(
        lambda: [e.name for e in tracking_events(engine)],
        until=lambda names: len(names) >= count,
        timeout=5,
        what=f"{count} tracking events",
    )
    return tracking_events(engine)


async def test_a_tracked_email_counts_its_open_and_its_clicks(
    settings: Settings,
    client: httpx.AsyncClient,
    engine: Engine,
    write_key: str,
    embedded: EmbeddedWorker,
) -> None:
    sent, markup = await sent_email(settings, client, embedded, write_key, "Signed Up")
    assert sent.rule_id == "tracked"
    start, mailto, anchor, unsubscribe = links_in(markup)
    assert start.startswith(f"{settings.public_url}/v1/t/c/")
    assert (mailto, anchor) == ("mailto:help@example.com", "#top")
    assert unsubscribe.startswith(f"{settings.public_url}/v1/unsubscribe/")
    [pixel] = re.findall(r'<img src="([^"]*)"', markup)
    assert pixel.startswith(f"{settings.public_url}/v1/t/o/")

    response = await client.get(urlsplit(pixel).path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.content.startswith(b"GIF89a")
    assert "no-store" in response.headers["cache-control"]
    assert message(engine, sent.id).status == "opened"

    response = await client.get(urlsplit(start).path)
    assert response.status_code == 302
    assert response.headers["location"] == START
    assert response.headers["referrer-policy"] == "no-referrer"
    row = message(engine, sent.id)
    assert row.status == "clicked"
    assert [c.status for c in history(engine, sent.id)][-2:] == ["opened", "clicked"]

    # Reading it again and clicking again: still one open and one click on the timeline.
    assert (await client.get(urlsplit(pixel).path)).status_code == 200
    assert (await client.get(urlsplit(start).path)).status_code == 302
    opened, clicked = await wait_tracking_events(engine, 2)
    # Recording a hit queues no job: the scheduler's sweep processes these events.
    await wait_processed(engine, 4)
    assert len(tracking_events(engine)) == 2
    assert (opened.name, clicked.name) == ("Email Opened", "Email Link Clicked")
    assert {e.profile_id for e in (opened, clicked)} == {row.profile_id}
    assert clicked.properties is not None
    assert (clicked.properties["message_id"], clicked.properties["url"]) == (sent.id, START)


async def test_a_tampered_link_redirects_nowhere(
    settings: Settings,
    client: httpx.AsyncClient,
    engine: Engine,
    write_key: str,
    embedded: EmbeddedWorker,
) -> None:
    sent, markup = await sent_email(settings, client, embedded, write_key, "Signed Up")
    path = urlsplit(links_in(markup)[0]).path
    evil = tracking.sign(b"guessed key", Hit(sent.id, "https://evil.example/"))
    for bad in (path[:-3] + "abc", f"/v1/t/c/{evil}", "/v1/t/c/https:%2F%2Fevil.example"):
        response = await client.get(bad)
        assert response.status_code in (400, 404), bad
        assert "location" not in response.headers
    response = await client.get(f"/v1/t/o/{evil}")  # the image still loads, counts nothing
    assert response.headers["content-type"] == "image/gif"
    assert message(engine, sent.id).status == "sent"
    assert tracking_events(engine) == []


async def test_the_redirect_works_when_the_click_cannot_be_recorded(
    settings: Settings,
    client: httpx.AsyncClient,
    engine: Engine,
    write_key: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    embedded: EmbeddedWorker,
) -> None:
    sent, markup = await sent_email(settings, client, embedded, write_key, "Signed Up")

    def broken(*args: object) -> None:
        raise RuntimeError("database down")

    monkeypatch.setattr(link_endpoints, "apply_reports", broken)
    response = await client.get(urlsplit(links_in(markup)[0]).path)
    assert (response.status_code, response.headers["location"]) == (302, START)
    assert "could not record a tracked click" in caplog.text
    assert message(engine, sent.id).status == "sent"


@pytest.mark.parametrize("event", ["Order Completed", "App Opened"])
async def test_an_untracked_email_keeps_its_links(
    settings: Settings,
    client: httpx.AsyncClient,
    write_key: str,
    event: str,
    embedded: EmbeddedWorker,
) -> None:
    """A rule without `track`, and a send step that switches its rule's `track` off."""
    sent, markup = await sent_email(settings, client, embedded, write_key, event)
    assert sent.rule_id == {"Order Completed": "untracked", "App Opened": "step-off"}[event]
    assert links_in(markup)[:3] == [
        "https://shop.example/start?a=1&amp;b=2",
        "mailto:help@example.com",
        "#top",
    ]
    assert "/v1/t/" not in markup
    assert secret_key(settings)  # the same deployment signs tracked links for other rules
