"""Delivery reports through POST /v1/webhooks/{account}, on SQLite and PostgreSQL: what a
signed report changes (status, suppression list, subscriptions, the person's timeline and the
rules), what an unsigned or repeated one does not, and Amazon SNS's subscription handshake.

Most tests use a small receiver signed with an HMAC header, put in the app's adapter cache
for the account `fake-esp` (the adapters' own tests cover their providers' formats); one test
goes through the real Twilio adapter, signed by Twilio's own library."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from twilio.request_validator import RequestValidator

from service.delivery.providers import Inbound, Report, WebhookRejected, WebhookResult
from service.kit.db import unit_of_work, utcnow
from service.kit.settings import Settings
from service.models import Event, Message, RuleVersion, User, WebhookEvent
from tests.helpers.consent import add_message, add_user, message_row, status_history
from tests.helpers.engine import db_messages
from tests.helpers.rules import RulePack
from tests.helpers.waiting import EmbeddedWorker

PUBLIC_URL = "https://lifeline.example"
SECRET = b"fake-esp-signing-secret"
TWILIO_TOKEN = "twilio-auth-token-for-tests"
PROVIDERS = f"""
accounts:
  fake-esp:
    provider: fake
  twilio-sms:
    provider: twilio
    account_sid: AC00000000000000000000000000000000
    auth_token: {TWILIO_TOKEN}
    from: "+15005550006"
  broken:
    provider: twilio
"""


class FakeReceiver:
    """A provider whose webhook is a JSON list of reports, signed with HMAC-SHA256 over the
    URL it called and the body (X-Fake-Signature)."""

    def verify_webhook(self, request: Inbound) -> None:
        expected = sign(request.url, request.body)
        if not hmac.compare_digest(request.headers.get("x-fake-signature", ""), expected):
            raise WebhookRejected("X-Fake-Signature does not match")

    def parse_webhook(self, request: Inbound) -> WebhookResult:
        payload = request.json()
        reports = [
            Report(
                event_id=item["id"],
                status=item["status"],
                at=dt.datetime.fromisoformat(item.get("at") or utcnow().isoformat()),
                message_id=item.get("message_id"),
                provider_message_id=item.get("provider_message_id"),
                address=item.get("address"),
                detail=item.get("detail"),
                url=item.get("url"),
            )
            for item in payload.get("events", [])
        ]
        return WebhookResult(reports=reports, confirm_url=payload.get("confirm_url"))


def sign(url: str, body: bytes) -> str:
    return hmac.new(SECRET, url.encode() + b"\n" + body, hashlib.sha256).hexdigest()


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    providers = tmp_path / "providers.yaml"
    providers.write_text(PROVIDERS, encoding="utf-8")
    return settings.model_copy(update={"public_url": PUBLIC_URL, "providers_file": providers})


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    app.state.webhook_receivers.adapters["fake-esp"] = FakeReceiver()
    transport = httpx.ASGITransport(app=app)
    # Not the public URL: signatures must cover the URL the provider called.
    async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.7:8000") as client:
        yield client


async def post(
    client: httpx.AsyncClient,
    events: list[dict[str, Any]],
    *,
    signature: str | None = None,
    **extra: Any,
) -> httpx.Response:
    body = json.dumps({"events": events, **extra}).encode()
    path = "/v1/webhooks/fake-esp"
    given = sign(PUBLIC_URL + path, body) if signature is None else signature
    return await client.post(path, content=body, headers={"X-Fake-Signature": given})


async def post_ok(client: httpx.AsyncClient, *events: dict[str, Any]) -> dict[str, Any]:
    response = await post(client, list(events))
    assert response.status_code == 200, response.text
    summary: dict[str, Any] = response.json()
    return summary


def sent_message(
    engine: Engine,
    profile: int | None,
    *,
    provider: str = "fake-esp",
    provider_message_id: str | None = None,
    **kwargs: Any,
) -> int:
    """A message its provider accepted, as record_result leaves it."""
    message_id = add_message(engine, profile, status="sent", history=(("sent", None),), **kwargs)
    with unit_of_work(engine) as uow:
        uow.session.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(provider=provider, provider_message_id=provider_message_id)
        )
    return message_id


def report(event_id: str, status: str, message_id: int, **fields: Any) -> dict[str, Any]:
    return {"id": event_id, "status": status, "message_id": message_id, **fields}


def count(engine: Engine, model: Any) -> int:
    with unit_of_work(engine) as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


async def suppressions(client: httpx.AsyncClient, admin: dict[str, str]) -> list[tuple[str, ...]]:
    response = await client.get("/v1/suppressions", headers=admin)
    assert response.status_code == 200, response.text
    return [(s["channel"], s["address"], s["reason"]) for s in response.json()["suppressions"]]


async def subscriptions(
    client: httpx.AsyncClient, admin: dict[str, str], user_id: str
) -> list[tuple[str, str, bool, str]]:
    response = await client.get(f"/v1/users/{user_id}/subscriptions", headers=admin)
    assert response.status_code == 200, response.text
    return [
        (s["channel"], s["topic"], s["subscribed"], s["source"])
        for s in response.json()["subscriptions"]
    ]


# --- Which account, and whether the request is the provider's ---------------------------------


async def test_unknown_unusable_and_misconfigured_accounts(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    unknown = await client.post("/v1/webhooks/nobody", content=b"{}")
    assert unknown.status_code == 404
    assert unknown.json() == {"success": False, "error": "no provider account 'nobody'"}

    local = await client.post("/v1/webhooks/local-email", content=b"{}")  # the default email
    assert local.status_code == 404
    assert local.json()["error"] == "account 'local-email' takes no delivery webhooks"

    with caplog.at_level(logging.ERROR, logger="service.delivery.webhooks"):
        for _ in range(2):
            broken = await client.post("/v1/webhooks/broken", content=b"x=1")
            assert broken.status_code == 503
            assert "not configured correctly" in broken.json()["error"]
    logged = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
    assert len(logged) == 1  # built once: the error is kept, not rebuilt per request
    assert "account_sid" in logged[0]  # what is missing, for the operator


async def test_unsigned_unreadable_or_oversized_requests_change_nothing(
    client: httpx.AsyncClient, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    message_id = sent_message(engine, profile)
    events = [report("ev-1", "bounced", message_id, address="ada@example.com")]

    with caplog.at_level(logging.WARNING):
        forged = await post(client, events, signature="0" * 64)
        unsigned = await client.post("/v1/webhooks/fake-esp", json={"events": events})

    assert forged.status_code == unsigned.status_code == 401
    assert forged.json()["error"] == "not a verifiable webhook of account 'fake-esp'"
    assert message_row(engine, message_id).status == "sent"
    assert count(engine, WebhookEvent) == count(engine, Event) == 0
    assert "ada@example.com" not in caplog.text

    # The same body, signed for the internal URL the request reached, is not the provider's.
    body = json.dumps({"events": events}).encode()
    internal = sign("http://10.0.0.7:8000/v1/webhooks/fake-esp", body)
    response = await post(client, events, signature=internal)
    assert response.status_code == 401

    unreadable = b"not json"
    response = await client.post(
        "/v1/webhooks/fake-esp",
        content=unreadable,
        headers={"X-Fake-Signature": sign(PUBLIC_URL + "/v1/webhooks/fake-esp", unreadable)},
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("unreadable webhook: ")
    response = await client.post("/v1/webhooks/fake-esp", content=b"x" * 1_000_001)
    assert response.status_code == 413
    assert message_row(engine, message_id).status == "sent"


# --- Status ----------------------------------------------------------------------------------


async def test_delivered_opened_clicked_move_the_status_once(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    message_id = sent_message(engine, profile, provider_message_id="esp-42")
    events = [
        # By the provider's id only: the lookup by (account, provider message id).
        {"id": "ev-1", "status": "delivered", "provider_message_id": "esp-42"},
        report("ev-2", "opened", message_id),
        report("ev-3", "clicked", message_id, url="https://example.com/offer"),
    ]

    first = await post(client, events)
    again = await post(client, events)  # the provider retries the whole batch

    assert first.status_code == again.status_code == 200
    assert first.json() == {"success": True, "applied": 3, "duplicates": 0, "unknown": 0}
    assert again.json() == {"success": True, "applied": 0, "duplicates": 3, "unknown": 0}
    detail = await client.get(f"/v1/messages/{message_id}", headers=admin)
    assert detail.json()["status"] == "clicked"
    assert [(h["status"], h["detail"]) for h in detail.json()["history"]] == [
        ("sent", None),
        ("delivered", "reported by fake-esp"),
        ("opened", "reported by fake-esp"),
        ("clicked", "reported by fake-esp"),
    ]


async def test_the_status_never_moves_backwards_or_out_of_a_terminal_one(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    message_id = sent_message(engine, profile)
    late = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

    await post_ok(client, report("ev-1", "opened", message_id))
    await post_ok(client, report("ev-2", "delivered", message_id))
    assert message_row(engine, message_id).status == "opened"

    await post_ok(client, report("ev-3", "bounced", message_id, detail="550 5.1.1 no such user"))
    await post_ok(client, report("ev-4", "clicked", message_id, at=late.isoformat()))
    row = message_row(engine, message_id)
    assert row.status == "bounced"
    assert row.status_at is not None and row.status_at < late  # a future time is not believed
    assert [s for s, _ in status_history(engine, message_id)] == ["sent", "opened", "bounced"]
    assert status_history(engine, message_id)[-1] == (
        "bounced",
        "fake-esp: 550 5.1.1 no such user",
    )


async def test_reports_about_unknown_messages_are_accepted_and_counted(
    client: httpx.AsyncClient, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    elsewhere = sent_message(engine, profile, provider="other-esp")  # sent by another account
    never_sent = add_message(engine, profile, status="queued")

    with caplog.at_level(logging.INFO):
        summary = await post_ok(
            client,
            report("ev-1", "delivered", 999_999, address="ada@example.com"),
            {"id": "ev-2", "status": "bounced", "provider_message_id": "not-ours"},
            report("ev-3", "bounced", elsewhere, address="ada@example.com"),
            report("ev-4", "delivered", never_sent),
        )

    assert summary == {"success": True, "applied": 0, "duplicates": 0, "unknown": 4}
    assert message_row(engine, elsewhere).status == "sent"
    assert message_row(engine, never_sent).status == "queued"
    assert count(engine, Event) == 0
    assert "not-ours" in caplog.text
    assert "ada@example.com" not in caplog.text


# --- Consent ---------------------------------------------------------------------------------


async def test_a_bounce_suppresses_the_address(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    profile = add_user(engine, "u-1", email="Ada@Example.com")
    message_id = sent_message(engine, profile)

    await post_ok(client, report("ev-1", "bounced", message_id))  # no address: the message's

    assert await suppressions(client, admin) == [("email", "ada@example.com", "hard_bounce")]
    assert message_row(engine, message_id).status == "bounced"


async def test_a_complaint_suppresses_and_unsubscribes_even_after_a_click(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    message_id = sent_message(engine, profile)

    await post_ok(client, report("ev-1", "clicked", message_id))
    await post_ok(client, report("ev-2", "complained", message_id, address="ada@example.com"))

    assert message_row(engine, message_id).status == "complained"
    assert await suppressions(client, admin) == [("email", "ada@example.com", "complaint")]
    assert await subscriptions(client, admin, "u-1") == [("email", "*", False, "complaint")]


async def test_a_complaint_after_a_terminal_status_still_suppresses(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    message_id = sent_message(engine, profile)

    await post_ok(client, report("ev-1", "unsubscribed", message_id))
    await post_ok(client, report("ev-2", "complained", message_id))

    assert message_row(engine, message_id).status == "unsubscribed"
    assert await suppressions(client, admin) == [("email", "ada@example.com", "complaint")]


async def test_an_unsubscribe_report_leaves_the_messages_topic(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    message_id = sent_message(engine, profile, rule="winback")
    with unit_of_work(engine) as uow:  # the rule as it was when the message was made
        uow.session.add(
            RuleVersion(
                rule_id="winback",
                version="v1",
                definition={"id": "winback", "category": "recall"},
                first_loaded_at=utcnow(),
            )
        )
    unknown_rule = sent_message(engine, profile, rule="gone")

    await post_ok(client, report("ev-1", "unsubscribed", message_id))
    assert await subscriptions(client, admin, "u-1") == [
        ("email", "recall", False, "unsubscribe_link")
    ]
    assert await suppressions(client, admin) == []  # one topic: the address stays usable
    assert message_row(engine, message_id).status == "unsubscribed"

    await post_ok(client, report("ev-2", "unsubscribed", unknown_rule))  # no topic known: all
    assert ("email", "*", False, "unsubscribe_link") in await subscriptions(client, admin, "u-1")


# --- Events and rules ------------------------------------------------------------------------


async def test_reports_become_events_on_the_users_timeline(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str], embedded: EmbeddedWorker
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    message_id = sent_message(engine, profile, rule="winback")
    opened_at = utcnow() - dt.timedelta(minutes=5)
    events = [
        report("ev-1", "opened", message_id, at=opened_at.isoformat()),
        report("ev-2", "clicked", message_id, url="https://example.com/offer"),
        report("ev-3", "failed", message_id),  # a failure is no event
    ]

    await post_ok(client, *events)
    await post_ok(client, *events)
    await embedded.processed(2)

    response = await client.get("/v1/users/u-1/events", headers=admin)
    timeline = response.json()["events"]
    assert [(e["type"], e["name"]) for e in timeline] == [
        ("track", "Email Link Clicked"),
        ("track", "Email Opened"),
    ]
    clicked, opened = timeline
    assert opened["properties"] == {
        "message_id": message_id,
        "rule_id": "winback",
        "channel": "email",
        "provider": "fake-esp",
    }
    assert clicked["properties"]["url"] == "https://example.com/offer"
    assert dt.datetime.fromisoformat(opened["timestamp"]) == opened_at


OPENED_RULES = """
rules:
  - id: thank-opener
    category: retention
    trigger: {event: Email Opened, where: {property: rule_id, eq: winback}}
    steps:
      - send: {channel: email, template: thanks}
"""


@pytest.mark.parametrize("rules_dir", [OPENED_RULES], indirect=True)
async def test_a_rule_triggered_by_an_opened_email_fires(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str], embedded: EmbeddedWorker
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    quiet_since = utcnow() - dt.timedelta(days=20)
    with unit_of_work(engine) as uow:
        uow.session.execute(
            update(User)
            .where(User.id == profile)
            .values(stage="at_risk", stage_since=quiet_since, last_active_at=quiet_since)
        )
    message_id = sent_message(engine, profile, rule="winback")

    await post_ok(client, report("ev-1", "opened", message_id))

    messages = await embedded.settled(2)
    thanks = [m for m in messages if m.rule_id == "thank-opener"]
    assert [(m.template, m.status) for m in thanks] == [("thanks", "sent")]
    assert len(db_messages(engine)) == 2
    # Opening an email is not using the product: the user is still at risk, not recalled.
    assert (await client.get("/v1/users/u-1", headers=admin)).json()["stage"] == "at_risk"


@pytest.fixture
def rules_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    rules = getattr(request, "param", None)
    if rules is None:
        return tmp_path / "no-rules"
    return RulePack(tmp_path / "rules").rules(rules).write()


# --- Amazon SNS's subscription handshake ------------------------------------------------------


CONFIRM = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t0k3n"


async def test_a_subscription_confirmation_is_fetched_over_https_only(
    client: httpx.AsyncClient,
) -> None:
    with respx.mock(assert_all_called=True) as sns:
        confirm = sns.get(CONFIRM).respond(200, text="<ConfirmSubscriptionResponse/>")
        response = await post(client, [], confirm_url=CONFIRM)
    assert response.status_code == 200
    assert confirm.call_count == 1

    with respx.mock as sns:  # SNS sends the confirmation again after a 5xx
        sns.get(CONFIRM).respond(500)
        failed = await post(client, [], confirm_url=CONFIRM)
        sns.get(CONFIRM).mock(side_effect=httpx.ConnectTimeout("timed out"))
        timed_out = await post(client, [], confirm_url=CONFIRM)
    assert failed.status_code == timed_out.status_code == 502

    with respx.mock(assert_all_called=False) as sns:
        plain = sns.get(url__startswith="http://")
        response = await post(client, [], confirm_url="http://169.254.169.254/latest/meta-data")
    assert response.status_code == 400
    assert not plain.called


# --- A real adapter ---------------------------------------------------------------------------


async def test_a_twilio_status_callback_signed_by_twilios_library(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str], embedded: EmbeddedWorker
) -> None:
    profile = add_user(engine, "u-1", phone="+14155550100")
    message_id = sent_message(
        engine, profile, channel="sms", provider="twilio-sms", provider_message_id="SM123"
    )
    path = f"/v1/webhooks/twilio-sms?lifeline_message_id={message_id}"
    form = {"MessageSid": "SM123", "MessageStatus": "delivered", "To": "+14155550100"}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC_URL + path, form)

    forged = await client.post(path, data=form, headers={"X-Twilio-Signature": "AAAA"})
    assert forged.status_code == 401
    response = await client.post(path, data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, response.text
    assert message_row(engine, message_id).status == "delivered"

    stop = {**form, "MessageStatus": "undelivered", "ErrorCode": "21610"}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC_URL + path, stop)
    response = await client.post(path, data=stop, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, response.text
    assert await subscriptions(client, admin, "u-1") == [("sms", "*", False, "unsubscribe_link")]
    await embedded.processed(2)
    timeline = (await client.get("/v1/users/u-1/events", headers=admin)).json()["events"]
    assert [e["name"] for e in timeline] == ["Unsubscribed", "SMS Delivered"]
