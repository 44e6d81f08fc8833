"""What a provider's answer does to a message: sent, tried again later, or failed; and the
rule that a status only moves forward."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from service.delivery.providers import ErrorKind, ProviderError, Sent
from service.delivery.service import backoff, record_result
from service.engine.index import RuleIndex
from service.kit.db import unit_of_work
from service.models import MessageStatus
from tests.helpers.delivery import claim_at, message, statuses
from tests.helpers.engine import START, db_messages, identify, ingest, track
from tests.helpers.rules import WELCOME, RulePack

SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def index(tmp_path: Path) -> RuleIndex:
    return RulePack(tmp_path / "rules").rules(WELCOME).index()


@pytest.fixture
def welcome(engine: Engine, index: RuleIndex) -> int:
    ingest(engine, index, [identify(email="ada@example.com"), track("Signed Up")], START)
    [queued] = db_messages(engine)
    return queued.id


def attempt(
    engine: Engine,
    index: RuleIndex,
    message_id: int,
    now: dt.datetime,
    result: Sent | ProviderError,
    max_attempts: int = 5,
) -> None:
    """Claim the message at `now` and record the provider's answer a second later."""
    assert claim_at(engine, index, message_id, now) is not None
    with unit_of_work(engine) as uow:
        record_result(uow.session, message_id, result, "fake-email", now + SECOND, max_attempts)


def test_an_accepted_message_is_sent_with_the_providers_id(
    engine: Engine, index: RuleIndex, welcome: int
) -> None:
    attempt(engine, index, welcome, START, Sent("provider-42"))
    row = message(engine, welcome)
    assert (row.status, row.provider, row.provider_message_id, row.status_reason) == (
        "sent",
        "fake-email",
        "provider-42",
        "accepted by fake-email",
    )
    assert statuses(engine, welcome) == ["queued", "sending", "sent"]


def test_a_retryable_error_backs_off_then_fails_after_the_last_attempt(
    engine: Engine, index: RuleIndex, welcome: int
) -> None:
    timeout = ProviderError("retryable", "connection timed out")
    now = START
    for number, wait in ((1, 30), (2, 60), (3, 120)):
        attempt(engine, index, welcome, now, timeout, max_attempts=4)
        row = message(engine, welcome)
        answered = now + SECOND
        assert (row.status, row.attempts, row.enqueued_at) == ("queued", number, None)
        assert row.send_at == answered + dt.timedelta(seconds=wait)
        assert row.status_reason is not None
        assert row.status_reason.startswith(f"fake-email: connection timed out; attempt {number}")
        # Not due before its back-off has passed.
        assert claim_at(engine, index, welcome, row.send_at - SECOND) is None
        now = row.send_at

    attempt(engine, index, welcome, now, timeout, max_attempts=4)
    row = message(engine, welcome)
    assert (row.status, row.attempts, row.status_reason) == (
        "failed",
        4,
        "fake-email (gave up after retries): connection timed out",
    )
    assert statuses(engine, welcome) == ["queued", *["sending", "queued"] * 3, "sending", "failed"]


def test_a_retry_waits_as_long_as_the_provider_asks(
    engine: Engine, index: RuleIndex, welcome: int
) -> None:
    attempt(engine, index, welcome, START, ProviderError("retryable", "slow down", retry_after=120))
    row = message(engine, welcome)
    assert (row.status, row.send_at) == ("queued", START + SECOND + dt.timedelta(seconds=120))
    assert row.status_reason == "fake-email: slow down; attempt 1 of 5, next in 2m"


@pytest.mark.parametrize("kind", ["permanent", "address_gone"])
def test_a_permanent_error_fails_the_message_at_once(
    engine: Engine, index: RuleIndex, welcome: int, kind: ErrorKind
) -> None:
    error = ProviderError(kind, "mailbox does not exist")
    attempt(engine, index, welcome, START, error)
    row = message(engine, welcome)
    assert (row.status, row.attempts, row.status_reason) == (
        "failed",
        1,
        f"fake-email ({kind}): mailbox does not exist",
    )
    assert claim_at(engine, index, welcome, START + dt.timedelta(days=1)) is None


def test_a_late_answer_for_a_settled_message_changes_nothing(
    engine: Engine, index: RuleIndex, welcome: int
) -> None:
    attempt(engine, index, welcome, START, Sent("provider-1"))
    with unit_of_work(engine) as uow:
        error = ProviderError("permanent", "late")
        record_result(uow.session, welcome, error, "fake-email", START + SECOND, 5)
    assert (message(engine, welcome).status, statuses(engine, welcome)[-1]) == ("sent", "sent")


def test_backoff_doubles_from_thirty_seconds_up_to_an_hour() -> None:
    assert [backoff(n, None).total_seconds() for n in range(1, 9)] == [
        30,
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
    ]
    assert backoff(3, 7.5) == dt.timedelta(seconds=7.5)


def test_the_back_off_starts_from_the_configured_base(
    engine: Engine, index: RuleIndex, welcome: int
) -> None:
    assert [backoff(n, None, base=0.25).total_seconds() for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert claim_at(engine, index, welcome, START) is not None
    with unit_of_work(engine) as uow:
        timeout = ProviderError("retryable", "connection timed out")
        record_result(uow.session, welcome, timeout, "fake-email", START, 5, retry_base_seconds=2)
    assert message(engine, welcome).send_at == START + 2 * SECOND


@pytest.mark.parametrize(
    ("current", "new"),
    [
        ("queued", "sending"),
        ("sending", "sent"),
        ("sent", "delivered"),
        ("delivered", "opened"),
        ("opened", "clicked"),
        ("sent", "opened"),  # a provider may report an open before the delivery
        ("sending", "failed"),
        ("sent", "bounced"),
        ("delivered", "complained"),
        ("clicked", "unsubscribed"),
    ],
)
def test_a_status_moves_forward(current: str, new: str) -> None:
    assert MessageStatus(current).can_move_to(MessageStatus(new))


@pytest.mark.parametrize(
    ("current", "new"),
    [
        ("sending", "queued"),
        ("sent", "sending"),
        ("delivered", "sent"),
        ("clicked", "opened"),
        ("sent", "sent"),
        ("failed", "sent"),
        ("bounced", "delivered"),
        ("skipped", "queued"),
        ("unsubscribed", "bounced"),
        ("complained", "complained"),
    ],
)
def test_a_status_never_moves_back_or_out_of_a_final_one(current: str, new: str) -> None:
    assert not MessageStatus(current).can_move_to(MessageStatus(new))
