"""Per-provider rate limits (LIFELINE_RATE_LIMITS): the setting, and send_message holding a
provider to its limit across worker processes through Redis, without losing a message or
counting an attempt for it."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from pydantic import ValidationError

from service.delivery.providers import Provider
from service.delivery.sending import Providers
from service.kit.db import utcnow
from service.kit.settings import RateLimit, Settings
from tests.helpers.delivery import FakeProvider, history, message, profile_id
from tests.helpers.engine import db_messages, identify, ingest, track
from tests.helpers.rules import WELCOME, RulePack
from tests.helpers.services import require_service
from workers.actors import build_runtime
from workers.delivery import send_message, sweep_messages
from workers.rate_limits import SendLimits
from workers.runtime import Runtime

REDIS_URL = os.environ.get("LIFELINE_TEST_RATE_LIMIT_REDIS_URL", "redis://127.0.0.1:6379/11")


def test_rate_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELINE_RATE_LIMITS", "webhook-email=100/s, local-sms = 10/s,twilio=30/m,")
    assert Settings().rate_limits == {
        "webhook-email": RateLimit(100, 1),
        "local-sms": RateLimit(10, 1),
        "twilio": RateLimit(30, 60),
    }
    assert str(Settings().rate_limits["twilio"]) == "30/m"


def test_no_rate_limits_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFELINE_RATE_LIMITS", raising=False)
    assert Settings().rate_limits == {}
    assert Settings(rate_limits="").rate_limits == {}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("twilio", "bad entry 'twilio', expected provider=count/s or provider=count/m"),
        ("=30/m", "bad entry '=30/m', expected provider=count/s"),
        ("twilio=many/m", "bad entry 'twilio=many/m', expected provider=count/s"),
        ("twilio=-3/m", "bad entry 'twilio=-3/m', expected provider=count/s"),
        ("local-sms=10/s,twilio=30/h", "bad entry 'twilio=30/h', unit must be s or m"),
        ("twilio=0/s", "bad entry 'twilio=0/s', count must be >= 1"),
        ("twilio=30/m,twilio=1/s", "bad entry 'twilio=1/s', twilio given twice"),
    ],
)
def test_a_bad_rate_limit_names_the_entry(
    monkeypatch: pytest.MonkeyPatch, text: str, error: str
) -> None:
    monkeypatch.setenv("LIFELINE_RATE_LIMITS", text)
    with pytest.raises(ValidationError, match=f"LIFELINE_RATE_LIMITS: {error}"):
        Settings()


class Clock:
    """The worker's clock, and the one Dramatiq's window rate limiter reads, moved together
    so a test decides when a window ends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = dt.timedelta()
        self.frozen = time.time()
        monkeypatch.setattr("service.delivery.sending.utcnow", self.now)
        monkeypatch.setattr("dramatiq.rate_limits.window.time", self)

    def now(self) -> dt.datetime:
        return utcnow() + self.offset

    def time(self) -> float:
        return self.frozen + self.offset.total_seconds()

    def advance(self, delta: dt.timedelta) -> None:
        self.offset += delta


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return RulePack(tmp_path / "rules").rules(WELCOME).write()


@pytest.fixture
def provider_name() -> str:
    """A provider name of this test's own, so its counts in Redis are its own."""
    return f"fake-email-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def limited(settings: Settings, provider_name: str) -> Callable[[str], Settings]:
    """Settings with a limit for the test's provider, on the Redis broker."""
    url = urlparse(REDIS_URL)
    require_service("Redis", url.hostname or "127.0.0.1", url.port or 6379)

    def limited(limit: str) -> Settings:
        return Settings.model_validate(
            settings.model_dump()
            | {"broker_url": REDIS_URL, "rate_limits": f"{provider_name}={limit}"}
        )

    return limited


Jobs = list[tuple[str, tuple[Any, ...]]]


def worker(settings: Settings, provider_name: str, jobs: Jobs) -> Runtime:
    """A runtime as a worker process holds it, its email going to a recording provider."""
    runtime = build_runtime(settings)
    runtime.rules.reload_if_changed()
    runtime.send_job = lambda actor, *args: jobs.append((actor, args))
    email = FakeProvider("email")
    email.name = provider_name
    providers: dict[str, Provider] = {
        "email": email,
        "sms": FakeProvider("sms"),
        "push": FakeProvider("push"),
    }
    runtime.providers = Providers(settings, providers)
    return runtime


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    opened: list[Runtime] = []
    yield opened
    for runtime in opened:
        runtime.close()


def calls(runtime: Runtime) -> list[int]:
    email = runtime.providers.loaded()["email"]
    assert isinstance(email, FakeProvider)
    return [call.message_id for call in email.calls]


def due_welcomes(runtime: Runtime, count: int) -> list[int]:
    """`count` users sign up a minute ago; returns their welcome emails, all due now."""
    index = runtime.rules.current()
    assert index is not None
    at = utcnow() - dt.timedelta(minutes=1)
    for n in range(count):
        calls = [identify(email=f"u-{n}@example.com"), track("Signed Up")]
        ingest(runtime.engine, index, calls, at, user_id=f"u-{n}")
    owners = {profile_id(runtime.engine, f"u-{n}") for n in range(count)}
    return [m.id for m in db_messages(runtime.engine) if m.profile_id in owners]


def test_a_burst_over_the_limit_waits_and_is_sent_in_the_next_window(
    limited: Callable[[str], Settings],
    provider_name: str,
    runtimes: list[Runtime],
    clock: Clock,
) -> None:
    jobs: Jobs = []
    runtime = worker(limited("3/m"), provider_name, jobs)
    runtimes.append(runtime)
    welcomes = due_welcomes(runtime, 5)

    for welcome in welcomes:
        send_message(runtime, welcome)

    assert calls(runtime) == welcomes[:3]
    for waiting in welcomes[3:]:
        row = message(runtime.engine, waiting)
        assert (row.status, row.attempts, row.enqueued_at) == ("queued", 0, None)
        assert row.send_at > clock.now()
        assert history(runtime.engine, waiting)[-1].detail == (
            f"rate limited by {provider_name}: 3/m; next try in 20s"
        )
    assert sweep_messages(runtime) == 0  # not due yet

    clock.advance(dt.timedelta(seconds=61))
    assert sweep_messages(runtime) == 2
    assert jobs == [("send_message", (welcomes[3:],))]
    for waiting in welcomes[3:]:
        send_message(runtime, waiting)

    assert calls(runtime) == welcomes
    for welcome in welcomes:
        row = message(runtime.engine, welcome)
        assert (row.status, row.attempts) == ("sent", 1)


def test_worker_processes_share_one_limit_through_redis(
    limited: Callable[[str], Settings],
    provider_name: str,
    runtimes: list[Runtime],
    clock: Clock,
) -> None:
    settings = limited("2/m")
    first = worker(settings, provider_name, [])
    second = worker(settings, provider_name, [])
    runtimes.extend([first, second])
    welcomes = due_welcomes(first, 4)

    for n, welcome in enumerate(welcomes):
        send_message(first if n % 2 == 0 else second, welcome)

    assert calls(first) + calls(second) == welcomes[:2]
    assert [message(first.engine, w).status for w in welcomes] == [
        "sent",
        "sent",
        "queued",
        "queued",
    ]


def test_the_in_process_broker_limits_each_process(
    settings: Settings, provider_name: str, runtimes: list[Runtime], clock: Clock
) -> None:
    limited = settings.model_copy(update={"rate_limits": {provider_name: RateLimit(2, 60)}})
    runtime = worker(limited, provider_name, [])
    runtimes.append(runtime)
    welcomes = due_welcomes(runtime, 3)

    for welcome in welcomes:
        send_message(runtime, welcome)

    assert calls(runtime) == welcomes[:2]
    assert message(runtime.engine, welcomes[2]).status == "queued"


def test_without_redis_the_message_waits_instead_of_going_over_the_limit(
    settings: Settings, provider_name: str, runtimes: list[Runtime]
) -> None:
    from dramatiq.rate_limits.backends import RedisBackend

    runtime = worker(settings, provider_name, [])
    runtimes.append(runtime)
    runtime.send_limits = SendLimits(
        {provider_name: RateLimit(100, 1)}, RedisBackend(url="redis://127.0.0.1:1/0")
    )
    [welcome] = due_welcomes(runtime, 1)

    send_message(runtime, welcome)

    assert calls(runtime) == []
    row = message(runtime.engine, welcome)
    assert (row.status, row.attempts) == ("queued", 0)
    assert row.status_reason == (
        f"rate limit of {provider_name} not checked: ConnectionError; next try in 5s"
    )
