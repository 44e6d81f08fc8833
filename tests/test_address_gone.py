"""A provider's word that an address is gone (APNs 410, FCM UNREGISTERED, Twilio 21610, a hard
bounce) stops the next message there: the device is disabled, the person unsubscribed from SMS,
the email address suppressed; the message's history says which."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from service.delivery.providers import ErrorKind, Outgoing, Provider, ProviderError
from service.delivery.sending import Providers
from service.delivery.service import record_result
from service.engine.index import RuleIndex
from service.kit.db import unit_of_work, utcnow
from service.kit.settings import Settings
from service.models import Device
from tests.helpers.consent import (
    RULES,
    add_device,
    add_message,
    add_user,
    index_for,
    message_row,
    status_history,
    subscriptions,
    suppressions,
)
from tests.helpers.delivery import FakeProvider, claim_at
from tests.helpers.rules import RulePack
from workers.actors import build_runtime
from workers.delivery import send_message
from workers.runtime import Runtime

PHONE = "+14155550100"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return RulePack(tmp_path / "rules").rules(RULES).write()


@pytest.fixture
def index(rules_dir: Path) -> RuleIndex:
    return index_for(rules_dir)


def answered(
    engine: Engine, index: RuleIndex, message_id: int, kind: ErrorKind, reason: str
) -> Outgoing:
    """Claim the message and record the provider's error for the address it went to."""
    claimed = claim_at(engine, index, message_id, utcnow())
    assert claimed is not None
    with unit_of_work(engine) as uow:
        error = ProviderError(kind, reason)
        record_result(
            uow.session, message_id, error, "fake", utcnow(), 5, address=claimed.outgoing.to
        )
    return claimed.outgoing


def devices(engine: Engine) -> list[tuple[str, str, bool]]:
    """(platform, token, still enabled) of every device."""
    with unit_of_work(engine) as uow:
        rows = uow.session.scalars(select(Device).order_by(Device.id))
        return [(d.platform, d.token, d.disabled_at is None) for d in rows]


def skipped_because(engine: Engine, index: RuleIndex, message_id: int) -> str | None:
    """Try to send the message now; why it was skipped (None: it would have gone out)."""
    if claim_at(engine, index, message_id, utcnow()) is not None:
        return None
    row = message_row(engine, message_id)
    assert row.status == "skipped", (row.status, row.status_reason)
    return row.status_reason


def test_a_gone_device_is_disabled_and_the_next_push_finds_no_device(
    engine: Engine, index: RuleIndex
) -> None:
    owner = add_user(engine, "u-1")
    add_device(engine, owner, "ios", "ios-token")
    first = add_message(engine, owner, channel="push", status="queued")

    outgoing = answered(engine, index, first, "address_gone", "410 Unregistered")

    assert (outgoing.to, outgoing.platform) == ("ios-token", "ios")
    assert status_history(engine, first)[-1] == (
        "failed",
        "fake (address_gone): 410 Unregistered; the device was disabled",
    )
    assert devices(engine) == [("ios", "ios-token", False)]
    later = add_message(engine, owner, channel="push", status="queued")
    assert skipped_because(engine, index, later) == "no push device"


def test_after_a_device_is_gone_push_goes_to_the_users_other_device(
    engine: Engine, index: RuleIndex
) -> None:
    owner = add_user(engine, "u-1")
    add_device(engine, owner, "android", "old-phone")
    add_device(engine, owner, "ios", "new-phone")  # the newest device gets the push
    first = add_message(engine, owner, channel="push", status="queued")
    assert answered(engine, index, first, "address_gone", "gone").to == "new-phone"

    later = add_message(engine, owner, channel="push", status="queued")
    claimed = claim_at(engine, index, later, utcnow())

    assert claimed is not None
    assert (claimed.outgoing.to, claimed.outgoing.platform) == ("old-phone", "android")
    assert devices(engine) == [("android", "old-phone", True), ("ios", "new-phone", False)]


def test_a_number_opted_out_at_the_provider_unsubscribes_its_owner_from_sms(
    engine: Engine, index: RuleIndex
) -> None:
    owner = add_user(engine, "u-1", email="ada@example.com", phone=PHONE)
    sms = add_message(engine, owner, channel="sms", status="queued")

    answered(engine, index, sms, "address_gone", "21610: the recipient replied STOP")

    assert status_history(engine, sms)[-1] == (
        "failed",
        "fake (address_gone): 21610: the recipient replied STOP; "
        "the user was unsubscribed from SMS",
    )
    assert subscriptions(engine) == [(owner, "sms", "*", False, "provider")]
    assert suppressions(engine) == [("sms", PHONE, "unsubscribe")]
    later = add_message(engine, owner, channel="sms", status="queued")
    assert skipped_because(engine, index, later) == "unsubscribed from sms (all topics)"
    # Only SMS: the person still gets email.
    email = add_message(engine, owner, channel="email", status="queued")
    assert skipped_because(engine, index, email) is None


def test_a_gone_number_not_on_a_profile_is_suppressed(engine: Engine, index: RuleIndex) -> None:
    direct = add_message(engine, None, channel="sms", status="queued", to_address=PHONE)

    answered(engine, index, direct, "address_gone", "21610")

    assert status_history(engine, direct)[-1] == (
        "failed",
        "fake (address_gone): 21610; the number was suppressed",
    )
    assert (subscriptions(engine), suppressions(engine)) == ([], [("sms", PHONE, "unsubscribe")])
    again = add_message(engine, None, channel="sms", status="queued", to_address=PHONE)
    assert skipped_because(engine, index, again) == "sms address suppressed: unsubscribe"


def test_a_gone_email_address_is_suppressed_as_a_hard_bounce(
    engine: Engine, index: RuleIndex
) -> None:
    owner = add_user(engine, "u-1", email="Ada@Example.com", phone=PHONE)
    email = add_message(engine, owner, channel="email", status="queued")

    answered(engine, index, email, "address_gone", "550 5.1.1 no such user")

    assert status_history(engine, email)[-1] == (
        "failed",
        "fake (address_gone): 550 5.1.1 no such user; the address was suppressed",
    )
    assert suppressions(engine) == [("email", "ada@example.com", "hard_bounce")]
    assert subscriptions(engine) == []
    # A hard bounce stops even receipts; SMS to the same person still goes.
    receipt = add_message(
        engine, owner, rule="receipt", channel="email", status="queued", transactional=True
    )
    assert skipped_because(engine, index, receipt) == "email address suppressed: hard bounce"
    sms = add_message(engine, owner, channel="sms", status="queued")
    assert skipped_because(engine, index, sms) is None


@pytest.mark.parametrize("channel", ["email", "sms", "push"])
def test_a_permanent_error_leaves_the_address_alone(
    engine: Engine, index: RuleIndex, channel: str
) -> None:
    owner = add_user(engine, "u-1", email="ada@example.com", phone=PHONE)
    add_device(engine, owner, "ios", "ios-token")
    first = add_message(engine, owner, channel=channel, status="queued")

    answered(engine, index, first, "permanent", "content rejected")

    assert status_history(engine, first)[-1] == ("failed", "fake (permanent): content rejected")
    assert (devices(engine), subscriptions(engine), suppressions(engine)) == (
        [("ios", "ios-token", True)],
        [],
        [],
    )
    later = add_message(engine, owner, channel=channel, status="queued")
    assert skipped_because(engine, index, later) is None


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = build_runtime(settings)
    runtime.rules.reload_if_changed()
    runtime.send_job = lambda *job: None
    yield runtime
    runtime.close()


def test_the_worker_disables_the_device_its_provider_calls_gone(runtime: Runtime) -> None:
    push = FakeProvider("push")
    push.error = ProviderError("address_gone", "BadDeviceToken")
    providers: dict[str, Provider] = {
        "email": FakeProvider("email"),
        "sms": FakeProvider("sms"),
        "push:*": push,
    }
    runtime.providers = Providers(runtime.settings, providers)
    owner = add_user(runtime.engine, "u-1")
    add_device(runtime.engine, owner, "android", "android-token")
    first = add_message(runtime.engine, owner, channel="push", status="queued")

    send_message(runtime, first)

    assert [call.to for call in push.calls] == ["android-token"]
    assert message_row(runtime.engine, first).status_reason == (
        "fake-push (address_gone): BadDeviceToken; the device was disabled"
    )
    assert devices(runtime.engine) == [("android", "android-token", False)]
