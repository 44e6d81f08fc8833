"""Segment's and RudderStack's own Python libraries, talking to a real server over HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
import rudderstack.analytics as rudderstack
import segment.analytics as segment
from sqlalchemy.engine import Engine

from tests.helpers.api import ADMIN_TOKEN, LiveServer, events
from tests.helpers.waiting import wait_processed

LIBRARIES = {"segment": segment.Client, "rudderstack": rudderstack.Client}
T0 = dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.UTC)


def _client(
    library: str, write_key: str, server: LiveServer, errors: list[Any], **options: Any
) -> Any:  # segment.Client or rudderstack.Client: neither library ships type hints
    def on_error(error: Exception, batch: list[dict[str, Any]]) -> None:
        errors.append((error, batch))

    return LIBRARIES[library](
        write_key,
        host=server.url,
        on_error=on_error,
        upload_interval=0.05,
        max_retries=1,
        **options,
    )


def _send_every_call(client: Any) -> dict[str, dict[str, Any]]:
    """One call of each kind; returns the messages the library queued, by type."""
    calls = [
        client.identify(
            "u-1",
            {"email": "Ann@Example.COM", "plan": "pro"},
            anonymous_id="anon-1",
            timestamp=T0,
            context={"timezone": "Europe/Paris"},
        ),
        client.track("u-1", "Order Completed", {"total": 42.5}, timestamp=T0 + dt.timedelta(1)),
        client.page("u-1", category="Docs", name="Pricing", properties={"path": "/pricing"}),
        client.screen("u-1", name="Home", properties={"tab": "feed"}),
        client.group("u-1", "g-7", {"name": "Acme"}),
        client.alias("anon-1", "u-1"),
    ]
    sent = {}
    for ok, message in calls:
        assert ok, message
        sent[message["type"]] = message
    return sent


def _profile(server: LiveServer, user_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = httpx.get(f"{server.url}/v1/users/{user_id}", headers=headers)
    assert response.status_code == 200, response.text
    profile: dict[str, Any] = response.json()
    return profile


@pytest.mark.parametrize(
    ("library", "options"),
    [
        ("segment", {}),
        ("segment", {"gzip": True}),
        ("rudderstack", {}),  # gzips by default
    ],
    ids=["segment", "segment-gzip", "rudderstack"],
)
def test_library_calls_arrive_with_their_fields(
    live_server: LiveServer, write_key: str, engine: Engine, library: str, options: dict[str, Any]
) -> None:
    errors: list[Any] = []
    client = _client(library, write_key, live_server, errors, **options)
    try:
        sent = _send_every_call(client)
        client.flush()
    finally:
        client.join()
    assert errors == []

    stored = {e.type: e for e in asyncio.run(wait_processed(engine, len(sent)))}
    assert len(events(engine)) == len(sent)
    for call_type, message in sent.items():
        event = stored[call_type]
        assert event.message_id == message["messageId"]
        assert event.user_id == "u-1"
        assert event.context is not None
        assert event.context["library"]["name"] == "analytics-python"
        assert event.sent_at is not None
    assert stored["identify"].anonymous_id == "anon-1"
    assert stored["identify"].original_timestamp == T0
    assert stored["track"].name == "Order Completed"
    assert stored["track"].properties == {"total": 42.5}
    assert stored["track"].original_timestamp == T0 + dt.timedelta(1)
    assert (stored["page"].name, stored["page"].properties) == ("Pricing", {"path": "/pricing"})
    assert (stored["screen"].name, stored["screen"].properties) == ("Home", {"tab": "feed"})
    assert (stored["group"].group_id, stored["group"].traits) == ("g-7", {"name": "Acme"})
    assert stored["alias"].previous_id == "anon-1"

    profile = _profile(live_server, "u-1")
    assert profile["traits"] == {"email": "Ann@Example.COM", "plan": "pro"}
    assert profile["email"] == "Ann@example.com"
    assert profile["timezone"] == "Europe/Paris"
    assert profile["anonymousIds"] == ["anon-1"]


def test_segment_sync_mode_sends_each_call_at_once(
    live_server: LiveServer, write_key: str, engine: Engine
) -> None:
    client = segment.Client(write_key, host=live_server.url, sync_mode=True, max_retries=1)
    ok, message = client.track("u-1", "Signed Up", {"plan": "free"})
    assert ok
    # No flush: the call has been answered, so the event is already stored.
    [event] = events(engine)
    assert (event.message_id, event.name, event.properties) == (
        message["messageId"],
        "Signed Up",
        {"plan": "free"},
    )


@pytest.mark.parametrize("library", list(LIBRARIES))
def test_a_refused_write_key_reaches_the_libraries_error_callback(
    live_server: LiveServer, engine: Engine, library: str
) -> None:
    errors: list[Any] = []
    client = _client(library, "ll_not-a-real-key", live_server, errors)
    try:
        client.track("u-1", "Signed Up")
        client.flush()
    finally:
        client.join()
    [(error, batch)] = errors
    assert error.status == 401
    assert "write key" in error.message
    assert [m["event"] for m in batch] == ["Signed Up"]
    assert events(engine) == []
