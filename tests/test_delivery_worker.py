"""The send_message actor and the scheduler's sweep of messages, with a provider that records
its calls: on SQLite and PostgreSQL, at the real clock as the worker runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.delivery.providers import Provider
from service.delivery.sending import Providers, redact
from service.delivery.service import claim
from service.engine.index import RuleIndex
from service.kit.db import unit_of_work, utcnow
from service.kit.settings import Settings
from tests.helpers.delivery import LINKS, FakeProvider, message, minutes, profile_id, statuses
from tests.helpers.engine import db_messages, identify, ingest, track
from tests.helpers.rules import QUIET_NIGHTS, WELCOME, RulePack
from workers.actors import build_runtime
from workers.delivery import send_message, sweep_messages
from workers.runtime import Runtime

CART = """
rules:
  - id: cart
    category: retention
    trigger: {event: Checkout Started}
    steps:
      - send: {channel: sms, template: reminder}
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return RulePack(tmp_path / "rules").policy(QUIET_NIGHTS).rules(WELCOME).rules(CART).write()


class Jobs:
    """Stands in for the broker: the jobs handed to it, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, actor_name: str, *args: Any) -> None:
        self.sent.append((actor_name, args))

    def take(self) -> list[tuple[str, tuple[Any, ...]]]:
        taken, self.sent = self.sent, []
        return taken


@pytest.fixture
def jobs() -> Jobs:
    return Jobs()


@pytest.fixture
def email() -> FakeProvider:
    return FakeProvider("email")


@pytest.fixture
def runtime(settings: Settings, jobs: Jobs, email: FakeProvider) -> Iterator[Runtime]:
    runtime = build_runtime(settings)
    runtime.rules.reload_if_changed()
    runtime.send_job = jobs
    providers: dict[str, Provider] = {
        "email": email,
        "sms": FakeProvider("sms"),
        "push": FakeProvider("push"),
    }
    runtime.providers = Providers(settings, providers)
    yield runtime
    runtime.close()


def live_index(runtime: Runtime) -> RuleIndex:
    index = runtime.rules.current()
    assert index is not None
    return index


def sign_up(runtime: Runtime, at: dt.datetime, user_id: str = "u-1") -> int:
    """A user who signs up at `at`; returns the id of the welcome email this queues."""
    calls = [identify(email=f"{user_id}@example.com"), track("Signed Up")]
    ingest(runtime.engine, live_index(runtime), calls, at, user_id=user_id)
    return only(runtime, user_id)


def only(runtime: Runtime, user_id: str) -> int:
    """The id of the one message queued for the user."""
    owner = profile_id(runtime.engine, user_id)
    [found] = [m.id for m in db_messages(runtime.engine) if m.profile_id == owner]
    return found


def night(days_from_now: int) -> dt.datetime:
    """22:00 UTC on a day before or after today: quiet hours for a user in UTC."""
    day = utcnow() + dt.timedelta(days=days_from_now)
    return day.replace(hour=22, minute=0, second=0, microsecond=0)


def checkout_at_night(runtime: Runtime, at: dt.datetime, user_id: str) -> int:
    """An SMS deferred to 08:00 the next morning by quiet hours; returns its id."""
    calls = [identify(phone="+14155550100"), track("Checkout Started")]
    ingest(runtime.engine, live_index(runtime), calls, at, user_id=user_id)
    found = only(runtime, user_id)
    row = message(runtime.engine, found)
    assert (row.send_at, row.enqueued_at) == (at + dt.timedelta(hours=10), None)
    return found


def test_a_message_is_sent_once_however_often_its_job_runs(
    runtime: Runtime, email: FakeProvider
) -> None:
    welcome = sign_up(runtime, utcnow())

    send_message(runtime, welcome)
    send_message(runtime, welcome)

    assert [call.message_id for call in email.calls] == [welcome]
    assert email.calls[0].idempotency_key == f"lifeline-message-{welcome}"
    row = message(runtime.engine, welcome)
    assert (row.status, row.provider, row.provider_message_id, row.attempts) == (
        "sent",
        "fake-email",
        f"fake-{welcome}",
        1,
    )
    assert statuses(runtime.engine, welcome) == ["queued", "sending", "sent"]


def test_an_unexpected_provider_exception_is_retried_later(
    runtime: Runtime, email: FakeProvider
) -> None:
    welcome = sign_up(runtime, utcnow())
    email.error = ConnectionResetError("peer reset")

    before = utcnow()
    send_message(runtime, welcome)
    after = utcnow()

    row = message(runtime.engine, welcome)
    assert (row.status, row.attempts) == ("queued", 1)
    assert row.status_reason == (
        "fake-email: unexpected ConnectionResetError; attempt 1 of 5, next in 30s"
    )
    backoff = dt.timedelta(seconds=30)
    assert before + backoff <= row.send_at <= after + backoff
    # Its job delivered again before the back-off has passed does not call the provider.
    send_message(runtime, welcome)
    assert len(email.calls) == 1


def test_an_unknown_provider_leaves_the_message_queued(
    settings: Settings, jobs: Jobs, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = build_runtime(settings.model_copy(update={"email_provider": "no-such-provider"}))
    try:
        runtime.rules.reload_if_changed()
        runtime.send_job = jobs
        welcome = sign_up(runtime, utcnow())
        send_message(runtime, welcome)
        assert "1 message(s) wait: a provider cannot be loaded: no provider 'no-such-provider'" in (
            caplog.text
        )
        row = message(runtime.engine, welcome)
        # Not claimed: the sweeper hands it to the broker again once the setting is fixed.
        assert (row.status, row.attempts, row.claimed_at) == ("queued", 0, None)
    finally:
        runtime.close()


def test_the_sweep_enqueues_due_messages_and_not_future_ones(runtime: Runtime, jobs: Jobs) -> None:
    deferred_due = checkout_at_night(runtime, night(-3), "u-night-past")
    checkout_at_night(runtime, night(3), "u-night-future")
    lost = sign_up(runtime, utcnow() - dt.timedelta(hours=1), "u-lost")  # the broker lost it
    sign_up(runtime, utcnow(), "u-fresh")  # just handed to the broker: not again yet
    assert jobs.take() == []  # ingest ran without a broker

    assert sweep_messages(runtime) == 2
    # One job carries the transaction's messages together.
    assert jobs.take() == [("send_message", ([deferred_due, lost],))]
    assert message(runtime.engine, deferred_due).enqueued_at is not None

    # Handed over just now: the next sweep leaves them to the broker.
    assert sweep_messages(runtime) == 0
    assert jobs.take() == []


@pytest.mark.parametrize("idempotent", [True, False])
def test_a_message_left_sending_by_a_stopped_worker_is_settled(
    runtime: Runtime, jobs: Jobs, email: FakeProvider, idempotent: bool
) -> None:
    email.idempotent = idempotent
    now = utcnow()
    stuck = sign_up(runtime, now - minutes(10), "u-stuck")
    busy = sign_up(runtime, now - minutes(10), "u-busy")
    index = live_index(runtime)
    with unit_of_work(runtime.engine) as uow:  # claimed, then the worker died mid-call
        stuck_after = dt.timedelta(seconds=runtime.settings.stuck_send_seconds)
        assert claim(uow.session, index, LINKS, stuck, now - stuck_after - minutes(1))
        assert claim(uow.session, index, LINKS, busy, now - minutes(1))  # still in the call

    sweep_messages(runtime)

    row = message(runtime.engine, stuck)
    prefix = "its worker stopped during the call to fake-email; "
    if idempotent:
        assert row.status == "queued"
        assert row.status_reason == prefix + "sending again with the same idempotency key"
        assert sweep_messages(runtime) == 1
        assert jobs.take() == [("send_message", ([stuck],))]
        send_message(runtime, stuck)
        assert [c.idempotency_key for c in email.calls] == [f"lifeline-message-{stuck}"]
        assert message(runtime.engine, stuck).status == "sent"
    else:
        assert row.status == "failed"
        assert row.status_reason == prefix + "not sent again, to avoid sending twice"
        assert sweep_messages(runtime) == 0
        assert jobs.take() == []
        assert email.calls == []
    assert message(runtime.engine, busy).status == "sending"


@pytest.mark.parametrize(
    ("reason", "address", "expected"),
    [
        (
            "550 5.1.1 <Ada@Example.com>: user unknown",
            "ada@example.com",
            "550 5.1.1 <<recipient>>: user unknown",
        ),
        (
            "The 'To' number +14155550100 is not a valid phone number.",
            "+14155550100",
            "The 'To' number <recipient> is not a valid phone number.",
        ),
        ("invalid number 14155550100", "+14155550100", "invalid number <recipient>"),
        ("HTTP 503: try later", "ada@example.com", "HTTP 503: try later"),
    ],
)
def test_a_provider_reason_never_repeats_the_recipient(
    reason: str, address: str, expected: str
) -> None:
    assert redact(reason, address) == expected
