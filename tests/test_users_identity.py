"""Profiles and identity, seen through the admin API: traits, contact fields, anonymous
history, aliases, the timeline and erasure."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.engine import Engine

from tests.helpers.api import (
    ADMIN_TOKEN,
    at,
    count_events,
    count_profiles,
    full_timeline,
    get_profile,
    send,
)
from tests.helpers.waiting import EmbeddedWorker


def identify(user_id: str, traits: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user_id, "traits": traits, **fields}


# --- Profiles and traits -----------------------------------------------------------------


async def test_one_profile_per_user_id_and_later_traits_win(
    client: httpx.AsyncClient,
    write_key: str,
    engine: Engine,
    admin: dict[str, str],
    embedded: EmbeddedWorker,
) -> None:
    await send(
        client,
        write_key,
        "identify",
        identify("u-1", {"plan": "free", "name": "Ann"}, timestamp=at(1)),
    )
    await send(client, write_key, "track", {"userId": "u-1", "event": "Paid", "timestamp": at(2)})
    await embedded.processed(2)
    await send(client, write_key, "identify", identify("u-1", {"plan": "pro"}, timestamp=at(3)))
    await embedded.processed(3)

    profile = await get_profile(client, admin, "u-1")
    assert profile["userId"] == "u-1"
    assert profile["traits"] == {"plan": "pro", "name": "Ann"}
    assert profile["erasedAt"] is None
    assert count_profiles(engine, "u-1") == 1
    assert len(await full_timeline(client, admin, "u-1")) == 3


async def test_an_older_identify_arriving_late_only_fills_gaps(
    client: httpx.AsyncClient,
    write_key: str,
    admin: dict[str, str],
    embedded: EmbeddedWorker,
) -> None:
    # Across requests: the newer call was processed first.
    await send(client, write_key, "identify", identify("u-1", {"plan": "pro"}, timestamp=at(30)))
    await embedded.processed(1)
    late = identify("u-1", {"plan": "free", "city": "Paris"}, timestamp=at(10))
    await send(client, write_key, "identify", late)
    # Within one batch, in the wrong order.
    batch = [
        identify("u-2", {"plan": "pro", "email": "new@example.com"}, timestamp=at(30)),
        identify(
            "u-2", {"plan": "free", "email": "old@example.com", "company": "X"}, timestamp=at(10)
        ),
    ]
    await send(client, write_key, "batch", {"batch": batch})
    await embedded.processed(4)

    profile = await get_profile(client, admin, "u-1")
    assert profile["traits"] == {"plan": "pro", "city": "Paris"}
    profile = await get_profile(client, admin, "u-2")
    assert profile["traits"] == {"plan": "pro", "email": "new@example.com", "company": "X"}
    assert profile["email"] == "new@example.com"

    # A newer call still overwrites what the late one filled in.
    await send(client, write_key, "identify", identify("u-1", {"city": "Lyon"}, timestamp=at(40)))
    await embedded.processed(5)
    profile = await get_profile(client, admin, "u-1")
    assert profile["traits"] == {"plan": "pro", "city": "Lyon"}


async def test_email_and_phone_are_normalised_and_bad_numbers_flagged(
    client: httpx.AsyncClient,
    write_key: str,
    admin: dict[str, str],
    embedded: EmbeddedWorker,
) -> None:
    # userId -> (traits, expected email, expected phone, expected phoneInvalid)
    cases: dict[str, tuple[dict[str, Any], str | None, str | None, bool]] = {
        "intl": (
            {"email": "  Ann@Example.COM ", "phone": "+44 20 7946 0958"},
            "Ann@example.com",
            "+442079460958",
            False,
        ),
        "national-gb": ({"phone": "020 7946 0958", "country": "GB"}, None, "+442079460958", False),
        "address-country": (
            {"phone": "020 7946 0958", "address": {"country": "gb"}},
            None,
            "+442079460958",
            False,
        ),
        "us": ({"phone": "(415) 555-2671", "country": "US"}, None, "+14155552671", False),
        "cn": ({"phone": "+86 138 0013 8000"}, None, "+8613800138000", False),
        "no-country": ({"phone": "020 7946 0958"}, None, None, True),
        "country-name": ({"phone": "020 7946 0958", "country": "United Kingdom"}, None, None, True),
        "too-short": ({"phone": "+1 555 0100"}, None, None, True),
        "words": ({"phone": "call me maybe", "email": "not-an-email"}, None, None, True),
        "not-a-string": ({"phone": ["+442079460958"]}, None, None, True),
        "none": ({"name": "No Contact"}, None, None, False),
    }
    batch = [identify(user_id, traits) for user_id, (traits, *_) in cases.items()]
    await send(client, write_key, "batch", {"batch": batch})
    await embedded.processed(len(cases))
    for user_id, (traits, email, phone, invalid) in cases.items():
        profile = await get_profile(client, admin, user_id)
        got = (profile["email"], profile["phone"], profile["phoneInvalid"])
        assert got == (email, phone, invalid), user_id
        assert profile["traits"] == traits  # the traits themselves are kept as sent

    # A corrected number clears the flag.
    await send(client, write_key, "identify", identify("words", {"phone": "+1 415 555 2671"}))
    await embedded.processed(len(cases) + 1)
    profile = await get_profile(client, admin, "words")
    assert (profile["phone"], profile["phoneInvalid"]) == ("+14155552671", False)


async def test_timezone_and_locale_from_context_and_traits_are_validated(
    client: httpx.AsyncClient,
    write_key: str,
    admin: dict[str, str],
    embedded: EmbeddedWorker,
) -> None:
    batch = [
        {
            "type": "track",
            "userId": "ctx",
            "event": "Opened",
            "context": {"timezone": "Asia/Shanghai", "locale": "zh_CN"},
        },
        identify("traits", {"timezone": "America/New_York", "locale": "en-US"}),
        {
            "type": "track",
            "userId": "bad",
            "event": "Opened",
            "context": {"timezone": "Mars/Olympus_Mons", "locale": "not a locale!"},
        },
        {
            "type": "track",
            "userId": "bad",
            "event": "Opened",
            "context": {"timezone": "../../etc/passwd", "locale": 42},
        },
    ]
    await send(client, write_key, "batch", {"batch": batch})
    await embedded.processed(len(batch))

    profile = await get_profile(client, admin, "ctx")
    assert (profile["timezone"], profile["locale"]) == ("Asia/Shanghai", "zh-CN")
    profile = await get_profile(client, admin, "traits")
    assert (profile["timezone"], profile["locale"]) == ("America/New_York", "en-US")
    profile = await get_profile(client, admin, "bad")
    assert (profile["timezone"], profile["locale"]) == (None, None)

    # An invalid value later does not wipe out a valid one.
    bad_later = {"userId": "ctx", "event": "Opened", "context": {"timezone": "Nowhere/Land"}}
    await send(client, write_key, "track", bad_later)
    await embedded.processed(len(batch) + 1)
    profile = await get_profile(client, admin, "ctx")
    assert profile["timezone"] == "Asia/Shanghai"


async def test_first_and_last_seen_follow_event_times_not_arrival(
    client: httpx.AsyncClient,
    write_key: str,
    admin: dict[str, str],
    embedded: EmbeddedWorker,
) -> None:
    for n, minute in enumerate((20, 40, 5), start=1):  # the earliest arrives last
        body = {"userId": "u-1", "event": f"E{minute}", "timestamp": at(minute)}
        await send(client, write_key, "track", body)
        await embedded.processed(n)
    profile = await get_profile(client, admin, "u-1")
    assert profile["firstSeenAt"].startswith("2024-03-01T10:05:00")
    assert profile["lastSeenAt"].startswith("2024-03-01T10:40:00")


# --- Identity ----------------------------------------------------------------------------


async def test_anonymous_activity_is_attached_on_identify_with_its_history(
    client: httpx.AsyncClient,
    write_key: str,
    admin: dict[str, str],
    embedded: EmbeddedWorker,
) -> None:
    before = [
        {"type": "page", "anonymousId": "anon-1", "name": "Home", "timestamp": at(1)},
        {
            "type": "track",
            "anonymousId": "anon-1",
            "event": "Added to Cart",
            "timestamp": at(2),
            "properties": {"sku": "A-1"},
        },
        {"type": "page", "anonymousId": "someone-else", "name": "Home", "timestamp": at(2)},
    ]
    await send(client, write_key, "batch", {"batch": before})
    await embedded.processed(3)
    assert (await client.get("/v1/users/anon-1", headers=admin)).status_code == 404

    ident = identify("u-1", {"email": "ann@example.com"}, anonymousId="anon-1", timestamp=at(3))
    await send(client, write_key, "identify", ident)
    await embedded.processed(4)
    after = {"anonymousId": "anon-1", "event": "Checked Out", "timestamp": at(4)}
    await send(client, write_key, "track", after)
    await embedded.processed(5)

    profile = await get_profile(client, admin, "u-1")
    assert profile["anonymousIds"] == ["anon-1"]
    timeline = await full_timeline(client, admin, "u-1")
    got = [(e["type"], e["name"], e["userId"], e["anonymousId"]) for e in timeline]
    assert got == [
        ("track", "Checked Out", None, "anon-1"),
        ("identify", None, "u-1", "anon-1"),
        ("track", "Added to Cart", None, "anon-1"),
        ("page", "Home", None, "anon-1"),
    ]
    added = next(e for e in timeline if e["name"] == "Added to Cart")
    assert added["properties"] == {"sku": "A-1"}
    assert added["originalTimestamp"].startswith("2024-03-01T10:02:00")


async def test_alias_attaches_the_previous_id_and_its_history(
    client: httpx.AsyncClient,
    write_key: str,
    admin: dict[str, str],
    embedded: EmbeddedWorker,
) -> None:
    batch = [
        {"type": "track", "anonymousId": "device-9", "event": "Opened App", "timestamp": at(1)},
        identify("guest-1", {"plan": "trial", "referrer": "ad"}, timestamp=at(2)),
        {"type": "track", "userId": "guest-1", "event": "Browsed", "timestamp": at(3)},
    ]
    await send(client, write_key, "batch", {"batch": batch})
    await embedded.processed(3)
    await send(
        client,
        write_key,
        "identify",
        identify("member-1", {"plan": "pro", "email": "m@example.com"}, timestamp=at(4)),
    )
    await embedded.processed(4)

    # An anonymous device, then a previous userId, are aliased to the member.
    await send(
        client,
        write_key,
        "alias",
        {"previousId": "device-9", "userId": "member-1", "timestamp": at(5)},
    )
    await embedded.processed(5)
    await send(
        client,
        write_key,
        "alias",
        {"previousId": "guest-1", "userId": "member-1", "timestamp": at(6)},
    )
    await embedded.processed(6)

    assert (await client.get("/v1/users/guest-1", headers=admin)).status_code == 404
    profile = await get_profile(client, admin, "member-1")
    assert profile["traits"] == {"plan": "pro", "email": "m@example.com", "referrer": "ad"}
    assert set(profile["anonymousIds"]) == {"device-9", "guest-1"}
    assert profile["firstSeenAt"].startswith("2024-03-01T10:02:00")
    timeline = await full_timeline(client, admin, "member-1")
    got = {(e["type"], e["name"], e["userId"], e["anonymousId"]) for e in timeline}
    assert got == {
        ("track", "Opened App", None, "device-9"),
        ("identify", None, "guest-1", None),
        ("track", "Browsed", "guest-1", None),
        ("identify", None, "member-1", None),
        ("alias", None, "member-1", None),
        ("alias", None, "member-1", None),
    }
    assert len(timeline) == 6

    # Later anonymous activity of the aliased device lands on the member too.
    await send(client, write_key, "track", {"anonymousId": "device-9", "event": "Opened App"})
    await embedded.processed(7)
    assert len(await full_timeline(client, admin, "member-1")) == 7


# --- Admin API ---------------------------------------------------------------------------


async def test_admin_api_needs_the_bearer_token(
    client: httpx.AsyncClient,
    write_key: str,
    admin: dict[str, str],
    embedded: EmbeddedWorker,
) -> None:
    await send(client, write_key, "identify", identify("u-1", {"email": "ann@example.com"}))
    await embedded.processed(1)
    refused: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": f"Bearer {write_key}"},
    ]
    for headers in refused:
        for method, path in (
            ("GET", "/v1/users/u-1"),
            ("GET", "/v1/users/u-1/events"),
            ("DELETE", "/v1/users/u-1"),
            ("GET", "/v1/users/nobody"),
        ):
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 401, (headers, method, path, response.text)
            assert "u-1" not in response.text and "ann@" not in response.text
    profile = await get_profile(client, admin, "u-1")
    assert profile["email"] == "ann@example.com"  # the refused DELETEs erased nothing
    assert profile["erasedAt"] is None

    for path in ("/v1/users/nobody", "/v1/users/nobody/events"):
        response = await client.get(path, headers=admin)
        assert response.status_code == 404, response.text
        assert response.json()["success"] is False


async def test_timeline_pages_newest_first_without_gaps_or_duplicates(
    client: httpx.AsyncClient,
    write_key: str,
    admin: dict[str, str],
    embedded: EmbeddedWorker,
) -> None:
    batch = [
        {"type": "track", "userId": "u-1", "event": f"E{i:02d}", "timestamp": at(i)}
        for i in range(23)
    ]
    batch.append({"type": "track", "userId": "u-2", "event": "Other user", "timestamp": at(30)})
    await send(client, write_key, "batch", {"batch": batch})
    await embedded.processed(24)

    first = (await client.get("/v1/users/u-1/events", headers=admin, params={"limit": 5})).json()
    assert [e["name"] for e in first["events"]] == ["E22", "E21", "E20", "E19", "E18"]
    assert first["nextCursor"] is not None

    # Events arriving mid-walk neither shift nor repeat the pages still to come.
    await send(client, write_key, "track", {"userId": "u-1", "event": "New", "timestamp": at(50)})
    await embedded.processed(25)

    seen = list(first["events"])
    cursor = first["nextCursor"]
    pages = 1
    while cursor is not None:
        response = await client.get(
            "/v1/users/u-1/events", headers=admin, params={"limit": 5, "cursor": cursor}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert 1 <= len(page["events"]) <= 5
        seen.extend(page["events"])
        cursor = page["nextCursor"]
        pages += 1
    assert pages == 5
    assert [e["name"] for e in seen] == [f"E{i:02d}" for i in range(22, -1, -1)]
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)

    everything = await full_timeline(client, admin, "u-1", limit=500)
    assert [e["name"] for e in everything][:2] == ["New", "E22"]
    assert len(everything) == 24

    for bad in ("abc", "-1", "1.5", "", "12abc", "\u00b2", "9" * 40):
        response = await client.get("/v1/users/u-1/events", headers=admin, params={"cursor": bad})
        assert response.status_code == 400, (bad, response.text)
        assert "cursor" in response.text
    for limit in ("0", "501", "ten"):
        response = await client.get("/v1/users/u-1/events", headers=admin, params={"limit": limit})
        assert response.status_code == 400, (limit, response.text)


# --- Erasure -----------------------------------------------------------------------------


async def test_delete_erases_personal_data_and_keeps_a_tombstone(
    client: httpx.AsyncClient,
    write_key: str,
    admin: dict[str, str],
    embedded: EmbeddedWorker,
) -> None:
    batch = [
        {
            "type": "page",
            "anonymousId": "anon-1",
            "name": "Home",
            "properties": {"referrer": "mail"},
            "context": {"ip": "203.0.113.1"},
            "timestamp": at(1),
        },
        identify(
            "u-1",
            {"email": "ann@example.com", "phone": "+44 20 7946 0958", "name": "Ann"},
            anonymousId="anon-1",
            timestamp=at(2),
            context={"ip": "203.0.113.1", "timezone": "Europe/London", "locale": "en-GB"},
        ),
        {
            "type": "track",
            "userId": "u-1",
            "event": "Paid",
            "properties": {"card": "4242"},
            "context": {"ip": "203.0.113.1"},
            "timestamp": at(3),
        },
        {"type": "track", "userId": "u-2", "event": "Paid", "properties": {"card": "1111"}},
    ]
    await send(client, write_key, "batch", {"batch": batch})
    await embedded.processed(4)
    assert (await get_profile(client, admin, "u-1"))["email"] == "ann@example.com"

    response = await client.delete("/v1/users/u-1", headers=admin)
    assert response.status_code == 200, response.text
    erased = response.json()
    assert erased["userId"] == "u-1"
    assert erased["erasedAt"]
    assert erased["eventsScrubbed"] == 3

    profile = await get_profile(client, admin, "u-1")
    assert profile["erasedAt"] == erased["erasedAt"]
    assert profile["traits"] == {}
    assert (profile["email"], profile["phone"], profile["timezone"], profile["locale"]) == (
        None,
        None,
        None,
        None,
    )
    timeline = await full_timeline(client, admin, "u-1")
    assert [e["name"] for e in timeline] == ["Paid", None, "Home"]  # the events stay...
    for event in timeline:  # ...without what they said about the person
        assert (event["properties"], event["traits"], event["context"]) == (None, None, None)
    other = await full_timeline(client, admin, "u-2")
    assert other[0]["properties"] == {"card": "1111"}  # nobody else is touched

    # Erasing again is harmless and keeps the original erasure time.
    response = await client.delete("/v1/users/u-1", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["erasedAt"] == erased["erasedAt"]


async def test_an_erased_user_does_not_regain_personal_data(
    client: httpx.AsyncClient,
    write_key: str,
    engine: Engine,
    admin: dict[str, str],
    embedded: EmbeddedWorker,
) -> None:
    ident = identify("u-1", {"email": "ann@example.com"}, anonymousId="anon-1")
    await send(client, write_key, "identify", ident)
    await embedded.processed(1)
    assert (await client.delete("/v1/users/u-1", headers=admin)).status_code == 200

    later = [
        identify(
            "u-1",
            {"email": "ann@example.com", "phone": "+44 20 7946 0958", "plan": "pro"},
            context={"timezone": "Europe/London", "ip": "203.0.113.1"},
        ),
        {"type": "track", "userId": "u-1", "event": "Paid", "properties": {"card": "4242"}},
        {"type": "page", "anonymousId": "anon-1", "name": "Home", "properties": {"q": "ann"}},
    ]
    await send(client, write_key, "batch", {"batch": later})
    await embedded.processed(4)
    assert count_events(engine) == 4  # stored, so the source sees them accepted

    profile = await get_profile(client, admin, "u-1")
    assert profile["erasedAt"] is not None
    assert profile["traits"] == {}
    assert (profile["email"], profile["phone"], profile["timezone"]) == (None, None, None)
    timeline = await full_timeline(client, admin, "u-1")
    assert len(timeline) == 4
    for event in timeline:
        assert (event["properties"], event["traits"], event["context"]) == (None, None, None)
