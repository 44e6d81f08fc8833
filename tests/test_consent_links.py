"""The pages behind the links in messages, on SQLite and PostgreSQL: RFC 8058 one-click
unsubscribe, the confirmation page a GET shows (and which changes nothing), the preference
page, and links that are forged, expired or lead nowhere."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy.engine import Engine

from tests.helpers.consent import (
    ONE_CLICK,
    add_message,
    add_user,
    assert_plain_page,
    expired_token,
    message_row,
    status_history,
    subscriptions,
    suppressions,
    token,
)


async def test_one_click_post_unsubscribes_from_the_messages_topic(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    profile = add_user(engine, "u-1", email="Ada@Example.com")
    message_id = add_message(engine, profile, rule="winback", status="delivered")
    link = f"/v1/unsubscribe/{token(profile, 'email', 'recall', message_id)}"

    response = await client.post(link, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)

    assert_plain_page(response)
    assert "no longer receive emails about" in response.text
    assert subscriptions(engine) == [(profile, "email", "recall", False, "unsubscribe_link")]
    assert suppressions(engine) == []  # one topic only: the address stays usable
    assert message_row(engine, message_id).status == "unsubscribed"
    assert status_history(engine, message_id)[-1] == (
        "unsubscribed",
        "unsubscribed through its link (recall)",
    )
    state = await client.get("/v1/users/u-1/subscriptions", headers=admin)
    assert [(s["channel"], s["topic"], s["subscribed"]) for s in state.json()["subscriptions"]] == [
        ("email", "recall", False)
    ]

    again = await client.post(link, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert_plain_page(again)  # a mail client may retry: same answer, same state
    assert subscriptions(engine) == [(profile, "email", "recall", False, "unsubscribe_link")]


async def test_get_shows_a_confirmation_and_changes_nothing(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    message_id = add_message(engine, profile, rule="winback", status="sent")
    link = f"/v1/unsubscribe/{token(profile, 'email', 'recall', message_id)}"

    for _ in range(3):  # a link scanner, a preview, the person
        response = await client.get(link)
        assert_plain_page(response)

    assert '<form method="post">' in response.text
    assert 'name="all"' in response.text
    assert "<script" not in response.text
    assert "script-src" not in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"
    assert subscriptions(engine) == []
    assert suppressions(engine) == []
    assert message_row(engine, message_id).status == "sent"


async def test_the_pages_all_box_unsubscribes_from_the_channel_and_suppresses_the_address(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    profile = add_user(engine, "u-1", email="Ada@Example.com")
    message_id = add_message(engine, profile, rule="winback", status="sent")
    link = f"/v1/unsubscribe/{token(profile, 'email', 'recall', message_id)}"

    response = await client.post(link, data={"all": "1"})

    assert_plain_page(response)
    assert "no longer receive any emails" in response.text
    assert subscriptions(engine) == [(profile, "email", "*", False, "unsubscribe_link")]
    assert suppressions(engine) == [("email", "ada@example.com", "unsubscribe")]
    assert message_row(engine, message_id).status == "unsubscribed"
    listed = await client.get("/v1/suppressions", headers=admin, params={"channel": "email"})
    assert [s["address"] for s in listed.json()["suppressions"]] == ["ada@example.com"]


async def test_the_pages_form_with_nothing_ticked_unsubscribes_from_the_topic(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    response = await client.post(
        f"/v1/unsubscribe/{token(profile, 'sms', 'activation')}", headers=ONE_CLICK
    )
    assert_plain_page(response)
    assert subscriptions(engine) == [(profile, "sms", "activation", False, "unsubscribe_link")]


async def test_an_invitation_link_suppresses_its_recipient_not_the_sender(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    message_id = add_message(
        engine, profile, rule="invite", status="sent", to_address=" Friend@Example.COM"
    )
    link = f"/v1/unsubscribe/{token(profile, 'email', 'acquisition', message_id)}"

    response = await client.post(link, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)

    assert_plain_page(response)
    assert subscriptions(engine) == []  # the profile who invited keeps their own choices
    assert suppressions(engine) == [("email", "friend@example.com", "unsubscribe")]
    assert message_row(engine, message_id).status == "unsubscribed"


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("kind", ["expired", "other key", "tampered", "garbage"])
async def test_forged_and_expired_links_change_nothing(
    client: httpx.AsyncClient, engine: Engine, method: str, kind: str
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    message_id = add_message(engine, profile, rule="winback", status="sent")
    genuine = token(profile, "email", "recall", message_id)
    bad = {
        "expired": expired_token(profile, message_id),
        "other key": token(profile, "email", "recall", message_id, key=b"not-our-key"),
        "tampered": token(profile + 1, "email", "*", message_id).split(".")[0]
        + "."
        + genuine.split(".", 1)[1],
        "garbage": "not-a-token",
    }[kind]

    for page in ("unsubscribe", "preferences"):
        response = await client.request(
            method,
            f"/v1/{page}/{bad}",
            content=b"List-Unsubscribe=One-Click" if page == "unsubscribe" else b"form=preferences",
            headers=ONE_CLICK,
        )
        assert response.status_code == 400, response.text
        assert "invalid or has expired" in response.text
        assert "set-cookie" not in response.headers

    assert subscriptions(engine) == []
    assert suppressions(engine) == []
    assert message_row(engine, message_id).status == "sent"


async def test_a_link_for_a_profile_that_is_gone_changes_nothing(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    response = await client.post(
        f"/v1/unsubscribe/{token(987654, 'email', 'recall')}",
        content=b"List-Unsubscribe=One-Click",
        headers=ONE_CLICK,
    )
    assert response.status_code == 404
    assert "nothing to change" in response.text
    page = await client.get(f"/v1/preferences/{token(987654, 'email', 'recall')}")
    assert page.status_code == 404
    assert subscriptions(engine) == []


async def test_what_the_link_says_is_escaped_on_the_page(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    response = await client.get(f"/v1/unsubscribe/{token(profile, '<b>x</b>', 'recall')}")
    assert response.status_code == 200
    assert "<b>" not in response.text
    assert "&lt;b&gt;x&lt;/b&gt;" in response.text


def checked(page: str) -> set[str]:
    return set(re.findall(r'name="([^"]+)" value="1" checked', page))


async def test_the_preference_page_shows_and_saves_choices(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com", phone="+14155550100")
    link = f"/v1/preferences/{token(profile, 'email', 'recall')}"

    page = await client.get(link)
    assert_plain_page(page)
    every_box = {
        f"{channel}:{topic}"
        for channel in ("email", "sms", "push")
        for topic in ("*", "acquisition", "activation", "retention", "recall")
    }
    assert checked(page.text) == every_box  # no row: subscribed to everything
    assert '<input type="hidden" name="form" value="preferences">' in page.text
    assert subscriptions(engine) == []

    # No more recall emails, and no text messages at all.
    wanted = every_box - {"email:recall", "sms:*"}
    saved = await client.post(link, data={"form": "preferences", **dict.fromkeys(wanted, "1")})

    assert_plain_page(saved)
    assert "Your choices are saved" in saved.text
    assert checked(saved.text) == wanted
    assert subscriptions(engine) == [
        (profile, "email", "recall", False, "preference_page"),
        (profile, "sms", "*", False, "preference_page"),
    ]
    assert suppressions(engine) == [("sms", "+14155550100", "unsubscribe")]
    assert checked((await client.get(link)).text) == wanted

    # Text messages back on: the unsubscribe suppression goes, the row says so.
    wanted.add("sms:*")
    await client.post(link, data={"form": "preferences", **dict.fromkeys(wanted, "1")})
    assert subscriptions(engine) == [
        (profile, "email", "recall", False, "preference_page"),
        (profile, "sms", "*", True, "preference_page"),
    ]
    assert suppressions(engine) == []


async def test_a_preference_post_without_the_pages_form_changes_nothing(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    profile = add_user(engine, "u-1", email="ada@example.com")
    link = f"/v1/preferences/{token(profile, 'email', 'recall')}"
    for body in (b"", b"List-Unsubscribe=One-Click"):
        response = await client.post(link, content=body, headers=ONE_CLICK)
        assert response.status_code == 400
    assert subscriptions(engine) == []


async def test_resubscribing_keeps_a_bounce_suppression(
    client: httpx.AsyncClient, engine: Engine, admin: dict[str, str]
) -> None:
    """Only an unsubscribe's suppression is the person's to lift; a hard bounce is not."""
    profile = add_user(engine, "u-1", email="ada@example.com")
    added = await client.post(
        "/v1/suppressions",
        headers=admin,
        json={"channel": "email", "address": "ada@example.com", "reason": "hard_bounce"},
    )
    assert added.status_code == 201, added.text
    link = f"/v1/unsubscribe/{token(profile, 'email', 'recall')}"
    await client.post(link, data={"all": "1"})
    assert suppressions(engine) == [("email", "ada@example.com", "hard_bounce")]

    resubscribed = await client.post(
        "/v1/users/u-1/subscriptions",
        headers=admin,
        json={"channel": "email", "topic": "*", "subscribed": True},
    )
    assert resubscribed.status_code == 200, resubscribed.text
    assert suppressions(engine) == [("email", "ada@example.com", "hard_bounce")]
