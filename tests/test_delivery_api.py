"""Messages as a person receives them: events sent to the API, the embedded worker sending
through the local providers into the outbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import json
import re
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from service.delivery.links import LINK_LIFETIME_SECONDS, secret_key, verify
from service.kit.db import unit_of_work, utcnow
from service.kit.settings import Settings
from service.models import Device, Message
from tests.helpers.api import send
from tests.helpers.delivery import history, profile_id
from tests.helpers.rules import WELCOME, RulePack
from tests.helpers.waiting import EmbeddedWorker

RULES = """
rules:
  - id: receipt
    category: retention
    transactional: true
    trigger: {event: Order Completed}
    steps:
      - send: {channel: email, template: receipt}
  - id: hello
    category: recall
    trigger: {event: App Opened}
    steps:
      - send: {channel: sms, template: nudge}
      - send: {channel: push, template: reminder}
"""
WELCOME_EMAIL = """
email:
  subject: "Welcome to Lifeline"
  html: '<h1>Welcome</h1><p>Start <a href="https://example.com/start">here</a>.</p>
    <p><a href="{{ links.unsubscribe }}">Unsubscribe</a></p>'
"""
RECEIPT_EMAIL = """
email: {subject: "Your receipt", html: "<p>Paid: <b>12 EUR</b></p>", text: "Paid: 12 EUR"}
"""
PHONE = "+14155550100"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return (
        RulePack(tmp_path / "rules")
        .rules(WELCOME)
        .rules(RULES)
        .template("welcome", WELCOME_EMAIL)
        .template("receipt", RECEIPT_EMAIL)
        .write()
    )


async def identify_and_track(
    client: httpx.AsyncClient, write_key: str, event: str, **traits: str
) -> None:
    """identify and track in one request, so one job processes them in order."""
    batch = [
        {"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com", **traits}},
        {"type": "track", "userId": "u-1", "event": event},
    ]
    await send(client, write_key, "batch", {"batch": batch})


def outbox(settings: Settings, messages: list[Message]) -> list[Path]:
    """The outbox's files, checked to be exactly one per message, named by its provider id."""
    files = sorted(settings.outbox_dir.iterdir())
    assert [f.name for f in files] == sorted(str(m.provider_message_id) for m in messages)
    return files


def parse(path: Path) -> EmailMessage:
    parsed = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def text_part(parsed: EmailMessage) -> str:
    part = parsed.get_body(("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return "\n".join(content.strip().splitlines())  # the file holds CRLF, as on the wire


def assert_history_moves_forward(engine: Engine, message: Message) -> None:
    changes = history(engine, message.id)
    assert [c.status for c in changes] == ["queued", "sending", "sent"]
    times = [c.at for c in changes]
    assert times == sorted(times)
    assert times[-1] == message.status_at


async def test_a_sign_up_sends_one_email_with_one_click_unsubscribe(
    settings: Settings,
    client: httpx.AsyncClient,
    engine: Engine,
    write_key: str,
    embedded: EmbeddedWorker,
) -> None:
    await identify_and_track(client, write_key, "Signed Up")
    [message] = await embedded.settled(1)
    assert (message.rule_id, message.status) == ("welcome", "sent")
    [path] = outbox(settings, [message])
    assert path.suffix == ".eml"
    assert_history_moves_forward(engine, message)

    parsed = parse(path)
    assert parsed["From"] == "Lifeline <noreply@localhost>"
    assert parsed["To"] == "ada@example.com"
    assert parsed["Subject"] == "Welcome to Lifeline"
    assert re.fullmatch(rf"<[^<>@\s]+\.{message.id}@lifeline\.local>", parsed["Message-ID"])
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header = parsed["List-Unsubscribe"]
    assert re.fullmatch(r"<[^<>]+>, <[^<>]+>", header), header
    web, mail = re.findall(r"<([^<>]+)>", header)
    assert web.startswith(f"{settings.public_url}/v1/unsubscribe/")
    assert re.match(r"https?://", web)
    token = web.rsplit("/", 1)[1]
    assert mail == f"mailto:unsubscribe@127.0.0.1?subject={token}"

    # No text in the template: the plain part is made from the HTML, links kept readable.
    assert text_part(parsed) == (
        "Welcome\n\nStart here (https://example.com/start).\n\n"
        f"Unsubscribe ({settings.public_url}/v1/unsubscribe/{token})"
    )
    html = parsed.get_body(("html",))
    assert html is not None
    assert f'<a href="{web}">Unsubscribe</a>' in html.get_content()

    # The link's token names the person, the channel and the rule's category, and only
    # verifies as signed, with this deployment's key, before it expires.
    key = secret_key(settings)
    claims = verify(key, token)
    assert claims is not None
    assert (claims.profile_id, claims.channel, claims.topic, claims.message_id) == (
        profile_id(engine, "u-1"),
        "email",
        "activation",
        message.id,
    )
    payload, signed = token.split(".", 1)  # the claims; their timestamp and signature
    other = "B" if payload[5] != "B" else "C"
    assert verify(key, f"{payload[:5]}{other}{payload[6:]}.{signed}") is None
    assert verify(key, f"{payload}.{signed[:-2]}") is None
    assert verify(b"another deployment's key", token) is None
    assert verify(key, token, now=time.time() + LINK_LIFETIME_SECONDS - 60) is not None
    assert verify(key, token, now=time.time() + LINK_LIFETIME_SECONDS + 60) is None


async def test_a_transactional_email_has_no_unsubscribe_headers(
    settings: Settings,
    client: httpx.AsyncClient,
    write_key: str,
    embedded: EmbeddedWorker,
) -> None:
    await identify_and_track(client, write_key, "Order Completed")
    [message] = await embedded.settled(1)
    assert (message.rule_id, message.status) == ("receipt", "sent")
    [path] = outbox(settings, [message])

    parsed = parse(path)
    assert (parsed["To"], parsed["Subject"]) == ("ada@example.com", "Your receipt")
    assert parsed["List-Unsubscribe"] is None
    assert parsed["List-Unsubscribe-Post"] is None
    assert text_part(parsed) == "Paid: 12 EUR"  # the template's own text, not derived


async def test_sms_and_push_are_written_as_json(
    settings: Settings,
    client: httpx.AsyncClient,
    engine: Engine,
    write_key: str,
    embedded: EmbeddedWorker,
) -> None:
    identify = {"type": "identify", "userId": "u-1", "traits": {"phone": PHONE}}
    await send(client, write_key, "batch", {"batch": [identify]})
    await embedded.processed(1)
    with unit_of_work(engine) as uow:
        device = Device(
            profile_id=profile_id(engine, "u-1"),
            platform="ios",
            token="device-token-1",
            created_at=utcnow(),
        )
        uow.session.add(device)
    await send(client, write_key, "track", {"userId": "u-1", "event": "App Opened"})

    sms, push = await embedded.settled(2)
    assert [(m.channel, m.status) for m in (sms, push)] == [("sms", "sent"), ("push", "sent")]
    sms_file, push_file = outbox(settings, [sms, push])
    assert json.loads(sms_file.read_text()) == {
        "message_id": sms.id,
        "channel": "sms",
        "to": PHONE,
        "body": "nudge",
    }
    assert json.loads(push_file.read_text()) == {
        "message_id": push.id,
        "channel": "push",
        "to": "device-token-1",
        "title": "reminder",
        "body": "reminder",
    }
    assert [(c.status, c.detail) for c in history(engine, sms.id)][1] == (
        "sending",
        "1 SMS segment(s)",
    )
    for message in (sms, push):
        assert_history_moves_forward(engine, message)
