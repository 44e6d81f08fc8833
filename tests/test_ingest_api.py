"""The Segment-compatible ingestion API: calls, auth, limits, validation, idempotency, time.

Several cases share one test where they share a set-up: each test runs on SQLite and on a
fresh PostgreSQL database, and that set-up is the expensive part.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from service.ingest.sources import revoke_source
from service.kit.db import unit_of_work, utcnow
from tests.helpers.api import count_events, events, new_write_key, parse_time
from tests.helpers.waiting import EmbeddedWorker

CONTEXT = {"ip": "203.0.113.9", "locale": "en-US", "library": {"name": "test", "version": "1"}}
INTEGRATIONS = {"All": True, "Mixpanel": False}
TIMESTAMP = "2024-03-01T10:00:00.123Z"

# One call of each type, with every Segment field that type carries.
CALLS: dict[str, dict[str, Any]] = {
    "identify": {
        "userId": "u-1",
        "anonymousId": "anon-1",
        "traits": {"email": "ann@example.com", "plan": "pro"},
    },
    "track": {
        "userId": "u-1",
        "event": "Order Completed",
        "properties": {"total": 42.5, "items": [{"sku": "A-1"}]},
    },
    "page": {"anonymousId": "anon-1", "name": "Pricing", "properties": {"path": "/pricing"}},
    "screen": {"userId": "u-1", "name": "Home", "properties": {"tab": "feed"}},
    "group": {"userId": "u-1", "groupId": "g-7", "traits": {"name": "Acme", "seats": 12}},
    "alias": {"previousId": "anon-1", "userId": "u-1"},
}

# What each call becomes in the events table: (name, properties, traits, previousId, groupId).
EXPECTED: dict[str, tuple[Any, ...]] = {
    "identify": (None, None, {"email": "ann@example.com", "plan": "pro"}, None, None),
    "track": ("Order Completed", {"total": 42.5, "items": [{"sku": "A-1"}]}, None, None, None),
    "page": ("Pricing", {"path": "/pricing"}, None, None, None),
    "screen": ("Home", {"tab": "feed"}, None, None, None),
    "group": (None, None, {"name": "Acme", "seats": 12}, None, "g-7"),
    "alias": (None, None, None, "anon-1", None),
}


def _full_call(call_type: str, message_id: str) -> dict[str, Any]:
    return {
        **CALLS[call_type],
        "messageId": message_id,
        "timestamp": TIMESTAMP,
        "context": CONTEXT,
        "integrations": INTEGRATIONS,
    }


def _assert_stored(event: Any, call_type: str, message_id: str) -> None:
    body = CALLS[call_type]
    name, properties, traits, previous_id, group_id = EXPECTED[call_type]
    assert event.type == call_type
    assert event.message_id == message_id
    assert event.user_id == body.get("userId")
    assert event.anonymous_id == body.get("anonymousId")
    assert (event.name, event.properties, event.traits) == (name, properties, traits), call_type
    assert (event.previous_id, event.group_id) == (previous_id, group_id)
    assert event.context == CONTEXT
    assert event.integrations == INTEGRATIONS
    assert event.original_timestamp == parse_time(TIMESTAMP)


async def _post(
    client: httpx.AsyncClient, key: str, path: str, body: Any, **headers: str
) -> httpx.Response:
    if isinstance(body, bytes):
        headers = {"Content-Type": "application/json", **headers}
        return await client.post(f"/v1/{path}", auth=(key, ""), content=body, headers=headers)
    return await client.post(f"/v1/{path}", auth=(key, ""), json=body, headers=headers)


# --- The calls ---------------------------------------------------------------------------


async def test_each_call_endpoint_stores_the_segment_fields(
    client: httpx.AsyncClient, write_key: str, embedded: EmbeddedWorker
) -> None:
    for call_type in CALLS:
        response = await _post(client, write_key, call_type, _full_call(call_type, call_type))
        assert response.status_code == 200, (call_type, response.text)
        assert response.json() == {"success": True}
    stored = {e.message_id: e for e in await embedded.processed(len(CALLS))}
    assert len(stored) == len(CALLS)
    for call_type in CALLS:
        _assert_stored(stored[call_type], call_type, call_type)


async def test_batch_stores_every_call_type_and_applies_batch_context(
    client: httpx.AsyncClient, write_key: str, embedded: EmbeddedWorker
) -> None:
    batch = [{"type": t, **_full_call(t, f"b-{t}")} for t in CALLS]
    batch.append({"type": "track", "userId": "u-2", "event": "Bare", "messageId": "bare"})
    body = {"batch": batch, "context": {"ip": "198.51.100.1", "app": {"name": "shop"}}}
    response = await _post(client, write_key, "batch", body)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    stored = {e.message_id: e for e in await embedded.processed(len(batch))}
    assert len(stored) == len(batch)
    bare = stored.pop("bare")
    assert bare.context == {"ip": "198.51.100.1", "app": {"name": "shop"}}
    for call_type in CALLS:
        event = stored[f"b-{call_type}"]
        # The item's own context wins over the batch's, key by key.
        assert event.context == {**CONTEXT, "app": {"name": "shop"}}
        event.context = CONTEXT
        _assert_stored(event, call_type, f"b-{call_type}")


async def test_numeric_ids_become_strings_and_missing_message_ids_are_generated(
    client: httpx.AsyncClient, write_key: str, engine: Engine
) -> None:
    for _ in range(2):
        response = await _post(client, write_key, "track", {"userId": 12345, "event": "Tapped"})
        assert response.status_code == 200, response.text
    stored = events(engine)
    assert [e.user_id for e in stored] == ["12345", "12345"]
    # Two calls without a messageId are two events, not one repeated.
    assert all(e.message_id for e in stored)
    assert stored[0].message_id != stored[1].message_id


# --- Authentication ----------------------------------------------------------------------

TRACK = {"userId": "u-1", "event": "Signed Up"}
TRACK_BATCH = {"batch": [{"type": "track", **TRACK}]}


async def test_write_key_as_basic_username_or_bearer_token_else_401(
    client: httpx.AsyncClient, write_key: str, engine: Engine
) -> None:
    refused = [
        None,
        "Bearer ll_not-a-real-key",
        "Basic " + base64.b64encode(b"ll_not-a-real-key:").decode(),
        "Basic " + base64.b64encode(f":{write_key}".encode()).decode(),  # key as the password
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"\xff\xfe:").decode(),
        "Bearer ",
        f"Token {write_key}",
    ]
    for authorization in refused:
        headers = {"Authorization": authorization} if authorization else {}
        for path, body in (("track", TRACK), ("batch", TRACK_BATCH)):
            response = await client.post(f"/v1/{path}", headers=headers, json=body)
            assert response.status_code == 401, (authorization, path, response.text)
            assert response.json()["success"] is False
            assert "write key" in response.json()["error"]
    assert events(engine) == []

    basic = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    bearer = f"Bearer {write_key}"
    for authorization in (basic, bearer):
        for path, body in (("track", TRACK), ("batch", TRACK_BATCH)):
            response = await client.post(
                f"/v1/{path}", headers={"Authorization": authorization}, json=body
            )
            assert response.status_code == 200, (authorization, path, response.text)
    assert count_events(engine) == 4


async def test_revoked_key_is_refused_while_other_sources_keep_working(
    client: httpx.AsyncClient, write_key: str, engine: Engine
) -> None:
    other_key = new_write_key(engine, "mobile")
    assert (await _post(client, write_key, "track", TRACK)).status_code == 200
    with unit_of_work(engine) as uow:
        revoke_source(uow.session, "web")

    for path, body in (("track", TRACK), ("batch", TRACK_BATCH)):
        response = await _post(client, write_key, path, body)
        assert response.status_code == 401, response.text
    assert (await _post(client, other_key, "track", TRACK)).status_code == 200
    assert count_events(engine) == 2  # the one sent before revocation, and the other source's


# --- Size limits -------------------------------------------------------------------------


def _padded_track(size: int, message_id: str = "m") -> dict[str, Any]:
    """A track call whose JSON is about `size` bytes."""
    return {
        "type": "track",
        "userId": "u-1",
        "event": "Big",
        "messageId": message_id,
        "properties": {"blob": "x" * (size - 120)},
    }


async def test_events_over_32kb_are_400_naming_the_limit(
    client: httpx.AsyncClient, write_key: str, engine: Engine
) -> None:
    response = await _post(client, write_key, "track", _padded_track(33 * 1024))
    assert response.status_code == 400, response.text
    assert "32 KB" in response.json()["error"]

    batch = [_padded_track(1024, "a"), _padded_track(40 * 1024, "big"), _padded_track(1024, "b")]
    response = await _post(client, write_key, "batch", {"batch": batch})
    assert response.status_code == 400, response.text
    body = response.json()
    assert "32 KB" in body["error"]
    assert [e["index"] for e in body["errors"]] == [1]
    assert "32 KB" in body["errors"][0]["message"]
    assert events(engine) == []

    # Just under the limit is fine.
    response = await _post(client, write_key, "track", _padded_track(31 * 1024, "fits"))
    assert response.status_code == 200, response.text
    assert [e.message_id for e in events(engine)] == ["fits"]


async def test_requests_over_500kb_are_413_naming_the_limit(
    client: httpx.AsyncClient, write_key: str, engine: Engine
) -> None:
    batch = [_padded_track(30 * 1024, f"m-{i}") for i in range(20)]  # ~600 KB of small items
    response = await _post(client, write_key, "batch", {"batch": batch})
    assert response.status_code == 413, response.text
    assert "500 KB" in response.json()["error"]

    response = await _post(client, write_key, "track", _padded_track(600 * 1024))
    assert response.status_code == 413, response.text
    assert "500 KB" in response.json()["error"]

    payload = json.dumps({"batch": batch}).encode()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start : start + 64 * 1024]

    response = await client.post(
        "/v1/batch",
        auth=(write_key, ""),
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert events(engine) == []


async def test_gzip_bodies_are_read_and_limited_after_inflating(
    client: httpx.AsyncClient, write_key: str, engine: Engine
) -> None:
    def gz(body: Any) -> bytes:
        return gzip.compress(json.dumps(body).encode())

    big_batch = gz({"batch": [_padded_track(30 * 1024, f"m-{i}") for i in range(20)]})
    assert len(big_batch) < 50 * 1024  # small on the wire, ~600 KB once inflated
    response = await _post(client, write_key, "batch", big_batch, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413, response.text
    assert "500 KB" in response.json()["error"]

    big_event = gz(_padded_track(40 * 1024))
    response = await _post(client, write_key, "track", big_event, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400, response.text
    assert "32 KB" in response.json()["error"]

    broken = b"\x1f\x8b this is not gzip"
    response = await _post(client, write_key, "track", broken, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400, response.text
    assert "gzip" in response.json()["error"]
    assert events(engine) == []

    batch = [
        {"type": "track", "userId": "u", "event": f"E{i}", "messageId": f"g{i}"} for i in range(3)
    ]
    response = await _post(
        client, write_key, "batch", gz({"batch": batch}), **{"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200, response.text
    response = await _post(client, write_key, "track", gz(TRACK), **{"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert sorted((e.name for e in events(engine)), key=str) == ["E0", "E1", "E2", "Signed Up"]


# --- Validation --------------------------------------------------------------------------

# (endpoint, body, the field the error must name)
WRONG_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("track", {"event": "Signed Up", "properties": {}}, "userId"),
    ("track", {"userId": "u"}, "event"),
    ("track", {"userId": "u", "event": "E", "properties": "not an object"}, "properties"),
    ("identify", {"userId": "u", "traits": ["a", "b"]}, "traits"),
    ("group", {"userId": "u"}, "groupId"),
    ("alias", {"userId": "u"}, "previousId"),
    ("page", {"userId": "u", "context": 7}, "context"),
    ("screen", {"userId": "u", "timestamp": "yesterday-ish"}, "timestamp"),
    ("track", {"userId": "u", "event": "E", "sentAt": "soon"}, "sentAt"),
    ("track", {"userId": "u", "event": "E", "messageId": "m" * 101}, "messageId"),
    ("track", {"userId": True, "event": "E"}, "userId"),
    ("track", {"anonymousId": {"id": 1}, "event": "E"}, "anonymousId"),
    ("track", {"userId": "u", "event": "E", "integrations": ["All"]}, "integrations"),
]


async def test_invalid_calls_are_400_naming_the_field(
    client: httpx.AsyncClient, write_key: str, engine: Engine
) -> None:
    response = await _post(client, write_key, "track", b'{"userId": "u-1", "event": ')
    assert response.status_code == 400, response.text
    assert "JSON" in response.json()["error"]

    for path, body, field in WRONG_FIELDS:
        response = await _post(client, write_key, path, body)
        assert response.status_code == 400, (path, body, response.text)
        errors = response.json()["errors"]
        assert field in [e["field"] for e in errors], (field, errors)
        assert field in response.json()["error"]
        assert "index" not in errors[0]  # not a batch
    assert events(engine) == []


async def test_a_batch_with_bad_items_stores_nothing_and_names_each_index_and_field(
    client: httpx.AsyncClient, write_key: str, engine: Engine
) -> None:
    fine = {"type": "track", "userId": "u", "event": "Fine"}
    batch = [
        {**fine, "messageId": "ok-0"},
        {"type": "identify", "userId": "u", "messageId": "ok-1"},
        {**fine, "properties": ["not", "a", "dict"]},
        {"type": "page", "anonymousId": "a", "messageId": "ok-3"},
    ]
    response = await _post(client, write_key, "batch", {"batch": batch})
    assert response.status_code == 400, response.text
    body = response.json()
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(2, "properties")]
    assert "batch[2].properties" in body["error"]

    batch = [fine, {"type": "purchase", "userId": "u"}]
    response = await _post(client, write_key, "batch", {"batch": batch})
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert (error["index"], error["field"]) == (1, "type")
    assert "purchase" in error["message"]

    batch = [{"userId": "u", "event": "No type"}, {"type": "track", "event": "No identity"}, fine]
    response = await _post(client, write_key, "batch", {"batch": batch})
    assert response.status_code == 400, response.text
    assert {(e["index"], e["field"]) for e in response.json()["errors"]} == {
        (0, "type"),
        (1, "userId"),
    }
    assert events(engine) == []


GARBAGE: list[bytes] = [
    b"[]",
    b"null",
    b"42",
    b'"a string"',
    b"true",
    b"",
    b"{}",
    b'{"batch": null}',
    b'{"batch": {"type": "track"}}',
    b'{"batch": "track"}',
    b'{"batch": [null, 1, "x", [], true]}',
    b'{"batch": [{"type": ["track"]}]}',
    b'{"batch": [{"type": {"nested": "track"}, "userId": "u"}]}',
    b'{"batch": [{"type": null, "userId": "u"}]}',
    b'{"batch": [{"type": "track", "userId": {"a": [1, 2]}, "event": ["x"]}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "E"}], "sentAt": [1]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "E"}], "context": "x"}',
    b'{"batch": [{"type": "track", "userId": 1.5, "event": "E"}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "E", "timestamp": 1e300}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "E", "timestamp": -1e20}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "E", "sentAt": "not a time"}]}',
    b'{"batch": [{"type": "alias", "userId": "u", "previousId": null}]}',
    b"\xff\xfe\x00{\x00}",
    b'{"userId": "\xff\xfe", "event": "x", "batch": []}',
    b'{"batch": [{"type": "track", "userId": "\\ud800", "event": "E"}]}',
    b'{"batch": [{"type": "track", "userId": "' + b"u" * 201 + b'", "event": "E"}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": "'
    + b"m" * 5000
    + b'"}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": 12}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "' + b"e" * 300 + b'"}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "E", "properties": '
    + b"[" * 3000
    + b"]" * 3000
    + b"}]}",
    b'{"batch": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
]


async def test_garbage_is_a_client_error_never_a_500(
    client: httpx.AsyncClient, write_key: str, engine: Engine
) -> None:
    for path in ("batch", "track"):
        for body in GARBAGE:
            response = await _post(client, write_key, path, body)
            assert 400 <= response.status_code < 500, (path, body[:80], response.text)
            assert response.json()["success"] is False, (path, body[:80])
    assert events(engine) == []


async def test_times_outside_the_storable_range_are_400_and_absurd_skew_is_ignored(
    client: httpx.AsyncClient, write_key: str, engine: Engine, embedded: EmbeddedWorker
) -> None:
    out_of_range = [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        "9999-12-31T23:59:59.999999Z",
    ]
    for timestamp in out_of_range:
        body = {"userId": "u", "event": "E", "timestamp": timestamp}
        for path, payload in (("track", body), ("batch", {"batch": [{"type": "track", **body}]})):
            response = await _post(client, write_key, path, payload)
            assert response.status_code == 400, (timestamp, path, response.text)
            assert response.json()["errors"][0]["field"] == "timestamp"
    assert events(engine) == []

    # A sentAt so far off that correcting by it leaves the calendar: the timestamp stands.
    for name, timestamp, sent_at in (
        ("late", "9999-06-01T00:00:00Z", "2000-01-01T00:00:00Z"),
        ("early", "0001-06-01T00:00:00Z", "9999-06-01T00:00:00Z"),
    ):
        body = {"userId": "u", "event": name, "timestamp": timestamp, "sentAt": sent_at}
        response = await _post(client, write_key, "track", body)
        assert response.status_code == 200, response.text
    stored = {e.name: e for e in await embedded.processed(2)}
    assert stored["late"].timestamp == parse_time("9999-06-01T00:00:00Z")
    assert stored["early"].timestamp == parse_time("0001-06-01T00:00:00Z")


async def test_nul_characters_are_400_naming_the_field(
    client: httpx.AsyncClient, write_key: str, engine: Engine
) -> None:
    """PostgreSQL cannot store NUL; SQLite could, but both backends answer alike."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"userId": "u\u0000x"}, "userId"),
        ({"properties": {"note": "a\u0000b"}}, "properties.note"),
        ({"context": {"k\u0000": 1}}, "context.k\u0000"),
    ]
    for item, field in cases:
        body = {"userId": "u", "event": "E", **item}
        response = await _post(client, write_key, "track", body)
        assert response.status_code == 400, (item, response.text)
        assert [(e.get("index"), e["field"]) for e in response.json()["errors"]] == [(None, field)]
        batch = {
            "batch": [{"type": "track", "userId": "u", "event": "Fine"}, {"type": "track", **body}]
        }
        response = await _post(client, write_key, "batch", batch)
        assert response.status_code == 400, (item, response.text)
        assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [(1, field)]
        assert "NUL" in response.json()["error"]
    assert events(engine) == []
    # An escaped backslash followed by "u0000" is ordinary text.
    raw = b'{"userId": "u", "event": "E", "properties": {"path": "C:\\\\u0000"}}'
    response = await _post(client, write_key, "track", raw)
    assert response.status_code == 200, response.text
    [event] = events(engine)
    assert event.properties == {"path": "C:\\u0000"}


# --- Idempotency -------------------------------------------------------------------------


async def test_a_repeated_message_id_is_acknowledged_and_stored_and_processed_once(
    client: httpx.AsyncClient,
    write_key: str,
    engine: Engine,
    admin: dict[str, str],
    embedded: EmbeddedWorker,
) -> None:
    first = {"userId": "u-1", "event": "Paid", "messageId": "m-1", "properties": {"n": 1}}
    again = {**first, "properties": {"n": 2}}
    for path, body in (
        ("track", first),
        ("track", again),
        ("batch", {"batch": [{"type": "track", **again}]}),
    ):
        response = await _post(client, write_key, path, body)
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True}
    [event] = await embedded.processed(1)
    assert event.properties == {"n": 1}  # the first one stands; a retry changes nothing

    identify = {"userId": "u-1", "messageId": "id-1", "traits": {"plan": "free"}}
    assert (await _post(client, write_key, "identify", identify)).status_code == 200
    await embedded.processed(2)
    replay = {**identify, "traits": {"plan": "enterprise"}, "timestamp": "2999-01-01T00:00:00Z"}
    assert (await _post(client, write_key, "identify", replay)).status_code == 200
    await embedded.processed(2)
    assert count_events(engine) == 2
    profile = (await client.get("/v1/users/u-1", headers=admin)).json()
    assert profile["traits"] == {"plan": "free"}  # the replay was not processed again
    timeline = (await client.get("/v1/users/u-1/events", headers=admin)).json()
    assert [e["messageId"] for e in timeline["events"]] == ["id-1", "m-1"]


async def test_message_ids_are_per_source_and_count_once_within_a_batch(
    client: httpx.AsyncClient, write_key: str, engine: Engine, embedded: EmbeddedWorker
) -> None:
    other_key = new_write_key(engine, "ios")
    batch = [
        {"type": "track", "userId": "u", "event": "A", "messageId": "dup"},
        {"type": "track", "userId": "u", "event": "B", "messageId": "other"},
        {"type": "track", "userId": "u", "event": "C", "messageId": "dup"},
    ]
    for key in (write_key, other_key):
        response = await _post(client, key, "batch", {"batch": batch})
        assert response.status_code == 200, response.text
    stored = await embedded.processed(4)
    assert len(stored) == 4
    by_source: dict[int, list[tuple[str, str | None]]] = {}
    for event in stored:
        by_source.setdefault(event.source_id, []).append((event.message_id, event.name))
    assert len(by_source) == 2
    for rows in by_source.values():
        assert sorted(rows) == [("dup", "A"), ("other", "B")]


# --- Time --------------------------------------------------------------------------------


async def test_clock_skew_is_corrected_per_call_and_per_batch(
    client: httpx.AsyncClient, write_key: str, engine: Engine
) -> None:
    skewed = {  # the client's clock is years behind, and the event happened 5 minutes before
        "userId": "u-1",
        "event": "Skewed",
        "timestamp": "2024-03-01T10:00:00Z",
        "sentAt": "2024-03-01T10:05:00Z",
    }
    offset = {"userId": "u", "event": "Offset", "timestamp": "2024-03-01T18:00:00+08:00"}
    bare = {"userId": "u", "event": "Bare"}
    batch: dict[str, Any] = {  # sentAt once for the whole batch applies to every item
        "batch": [
            {"type": "track", "userId": "u", "event": "A", "timestamp": "2024-03-01T10:00:00Z"},
            {"type": "track", "userId": "u", "event": "B", "timestamp": "2024-03-01T10:01:00Z"},
        ],
        "sentAt": "2024-03-01T10:02:00Z",
    }
    before = utcnow()
    for body in (skewed, offset, bare):
        assert (await _post(client, write_key, "track", body)).status_code == 200
    assert (await _post(client, write_key, "batch", batch)).status_code == 200
    after = utcnow()
    stored = {e.name: e for e in events(engine)}

    event = stored["Skewed"]
    original, sent_at = parse_time(skewed["timestamp"]), parse_time(skewed["sentAt"])
    assert event.original_timestamp == original
    assert event.sent_at == sent_at
    assert before <= event.received_at <= after
    assert event.timestamp == original + (event.received_at - sent_at)
    assert event.received_at - event.timestamp == dt.timedelta(minutes=5)

    event = stored["Offset"]  # no sentAt: nothing to correct, the same instant in UTC
    assert event.original_timestamp == dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC)
    assert event.timestamp == event.original_timestamp
    assert before <= event.received_at <= after

    event = stored["Bare"]  # no timestamp: it happened when it was received
    assert event.original_timestamp is None
    assert event.timestamp == event.received_at

    sent_at = parse_time(batch["sentAt"])
    for name, minutes_ago in (("A", 2), ("B", 1)):
        event = stored[name]
        original = sent_at - dt.timedelta(minutes=minutes_ago)
        assert event.sent_at == sent_at
        assert event.original_timestamp == original
        assert event.timestamp == original + (event.received_at - sent_at)
        assert event.received_at - event.timestamp == dt.timedelta(minutes=minutes_ago)
