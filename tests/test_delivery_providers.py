"""Provider adapters are found by name through entry points; the local ones write the outbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.delivery.accounts import load_provider
from service.delivery.providers import Outgoing
from service.kit.settings import Settings
from workers.providers.local import LocalOutbox


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(outbox_dir=tmp_path / "outbox")


@pytest.mark.parametrize("channel", ["email", "sms", "push"])
def test_the_local_providers_are_installed(settings: Settings, channel: str) -> None:
    provider = load_provider(f"local-{channel}", settings)
    assert isinstance(provider, LocalOutbox)
    assert (provider.name, provider.channel, provider.idempotent) == (
        f"local-{channel}",
        channel,
        True,
    )
    assert provider.outbox == settings.outbox_dir


def test_an_unknown_provider_names_the_installed_ones(settings: Settings) -> None:
    with pytest.raises(LookupError) as raised:
        load_provider("carrier-pigeon", settings)
    message = str(raised.value)
    assert message.startswith("no provider 'carrier-pigeon' is installed (installed: ")
    assert "local-email, local-push, local-sms" in message


def test_the_outbox_writes_a_message_once_however_often_it_is_sent(settings: Settings) -> None:
    provider = load_provider("local-sms", settings)
    first = Outgoing(7, "sms", "+14155550100", {"body": "Your code is 1234"})
    again = Outgoing(7, "sms", "+14155550100", {"body": "changed"})

    assert provider.send(first).provider_message_id == "0000000007-sms.json"
    assert provider.send(again).provider_message_id == "0000000007-sms.json"

    [path] = settings.outbox_dir.iterdir()
    assert "Your code is 1234" in path.read_text()
