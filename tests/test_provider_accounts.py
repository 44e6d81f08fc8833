"""Provider accounts: options from LIFELINE_<NAME>_<OPTION> or a providers file, push
providers per device platform, and what delivery does when an account cannot be built."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import textwrap
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import pytest
from dramatiq.brokers.stub import StubBroker
from pydantic import ValidationError
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine

from service.delivery.accounts import (
    configured_accounts,
    find_account,
    load_provider,
    read_providers_file,
)
from service.delivery.providers import (
    Account,
    Outgoing,
    Provider,
    ProviderConfigError,
    build_adapter,
)
from service.delivery.sending import Providers
from service.delivery.service import claim
from service.kit.db import unit_of_work, utcnow
from service.kit.settings import Settings
from tests.helpers.consent import (
    RULES,
    add_device,
    add_message,
    add_user,
    message_row,
    status_history,
)
from tests.helpers.delivery import LINKS, FakeProvider, minutes
from tests.helpers.rules import RulePack
from workers.actors import MESSAGES_QUEUE, build_runtime
from workers.delivery import send_message, sweep_messages
from workers.providers.local import LocalOutbox
from workers.providers.webhook import Webhook
from workers.runtime import Runtime

EMAIL = Outgoing(
    7,
    "email",
    "ada@example.com",
    {"subject": "Welcome", "html": "<p>Hi</p>", "text": "Hi"},
    idempotency_key="lifeline-message-7",
)


def providers_file(folder: Path, text: str) -> Path:
    path = folder / "providers.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def with_file(path: Path, **settings: Any) -> Settings:
    return Settings(providers_file=path, **settings)


# --- Accounts from the environment --------------------------------------------------------


def test_an_account_reads_its_options_from_lifeline_name_option() -> None:
    environ = {
        "LIFELINE_SENDGRID_API_KEY": "sg-key",
        "LIFELINE_SENDGRID_BASE_URL": "https://api.eu.sendgrid.com",
        "LIFELINE_TWILIO_AUTH_TOKEN": "someone else's",
        "SENDGRID_API_KEY": "not ours",
    }

    account = find_account("sendgrid", Settings(), environ)

    assert (account.name, account.provider) == ("sendgrid", "sendgrid")
    assert dict(account.options) == {
        "api_key": "sg-key",
        "base_url": "https://api.eu.sendgrid.com",
    }


def test_a_hyphenated_name_reads_underscored_variables() -> None:
    environ = {"LIFELINE_ALIYUN_SMS_ACCESS_KEY_ID": "id", "LIFELINE_ALIYUN_SMS_SIGN_NAME": "Shop"}

    account = find_account("aliyun-sms", Settings(), environ)

    assert account.require("access_key_id") == "id"
    assert account.get("sign_name") == "Shop"
    with pytest.raises(ProviderConfigError, match=r"set LIFELINE_ALIYUN_SMS_TEMPLATE_CODE$"):
        account.require("template_code")


def test_a_missing_option_names_the_variable_to_set() -> None:
    account = find_account("sendgrid", Settings(), {"LIFELINE_SENDGRID_API_KEY": ""})

    with pytest.raises(ProviderConfigError) as raised:
        account.require("api_key")

    assert str(raised.value) == (
        "provider account 'sendgrid' (sendgrid) needs 'api_key': set LIFELINE_SENDGRID_API_KEY"
    )
    assert account.get("region", "us") == "us"


def test_an_account_does_not_show_its_credentials() -> None:
    account = find_account("sendgrid", Settings(), {"LIFELINE_SENDGRID_API_KEY": "sg-secret"})

    assert "sg-secret" not in repr(account)
    assert "sg-secret" not in str(account)


# --- The providers file --------------------------------------------------------------------

TWO_SENDGRIDS = """
accounts:
  sendgrid-us:
    provider: sendgrid
    api_key: ${SENDGRID_US_KEY}
  sendgrid-eu:
    provider: sendgrid
    api_key: ${SENDGRID_EU_KEY}
    base_url: https://api.eu.sendgrid.com
    from: "Shop <${SHOP_DOMAIN_USER}@shop.example>"
    timeout: 5
    sandbox: true
"""
KEYS = {"SENDGRID_US_KEY": "us-key", "SENDGRID_EU_KEY": "eu-key", "SHOP_DOMAIN_USER": "hello"}


def test_a_providers_file_holds_several_accounts_of_one_provider(tmp_path: Path) -> None:
    path = providers_file(tmp_path, TWO_SENDGRIDS)

    accounts = read_providers_file(path, KEYS)

    assert {name: (a.provider, dict(a.options)) for name, a in accounts.items()} == {
        "sendgrid-us": ("sendgrid", {"api_key": "us-key"}),
        "sendgrid-eu": (
            "sendgrid",
            {
                "api_key": "eu-key",
                "base_url": "https://api.eu.sendgrid.com",
                "from": "Shop <hello@shop.example>",
                "timeout": "5",
                "sandbox": "true",  # as LIFELINE_<NAME>_SANDBOX=true would give it
            },
        ),
    }


def test_a_file_account_comes_before_the_environment(tmp_path: Path) -> None:
    settings = with_file(providers_file(tmp_path, TWO_SENDGRIDS))
    environ = {**KEYS, "LIFELINE_SENDGRID_EU_API_KEY": "from the environment"}

    assert find_account("sendgrid-eu", settings, environ).require("api_key") == "eu-key"
    # A name the file does not hold is still read from the environment.
    environ["LIFELINE_TWILIO_AUTH_TOKEN"] = "tw-token"
    assert find_account("twilio", settings, environ).require("auth_token") == "tw-token"


def test_a_missing_option_in_a_file_account_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = providers_file(tmp_path, TWO_SENDGRIDS)
    account = find_account("sendgrid-us", with_file(path), KEYS)

    with pytest.raises(ProviderConfigError) as raised:
        account.require("from")

    assert str(raised.value) == (
        f"provider account 'sendgrid-us' (sendgrid) needs 'from': set 'from' under "
        f"sendgrid-us in {path}"
    )


def test_an_unset_variable_names_the_variable_and_the_account(tmp_path: Path) -> None:
    path = providers_file(tmp_path, TWO_SENDGRIDS)
    environ = {"SENDGRID_US_KEY": "us-key", "SHOP_DOMAIN_USER": "hello"}

    with pytest.raises(ProviderConfigError) as raised:
        find_account("sendgrid-us", with_file(path), environ)

    assert str(raised.value) == (
        f"providers file {path}, account 'sendgrid-eu', api_key: "
        "environment variable SENDGRID_EU_KEY is not set"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("accounts: [sendgrid", "not valid YAML: expected ',' or ']'"),
        ("sendgrid:\n  provider: sendgrid\n", "expected a mapping 'accounts:'"),
        ("accounts:\n  - sendgrid\n", "expected a mapping 'accounts:'"),
        ("", "expected a mapping 'accounts:'"),
        (
            "accounts:\n  sendgrid-eu:\n    api_key: k\n",
            "account 'sendgrid-eu': needs 'provider: <adapter name>'",
        ),
        (
            "accounts:\n  SendGrid EU:\n    provider: sendgrid\n",
            "account 'SendGrid EU': a name is lower-case letters, digits, '-' and '_'",
        ),
        (
            "accounts:\n  lifeline:\n    provider: sendgrid\n",
            "account 'lifeline': the name 'lifeline' is Lifeline's own; pick another",
        ),
        (
            "accounts:\n  relay:\n    provider: webhook-email\n    url: {host: x}\n",
            "account 'relay', url: expected a string, got dict",
        ),
        (
            "accounts:\n  relay:\n    provider: webhook-email\n    secret:\n",
            "account 'relay', secret: expected a string, got NoneType",
        ),
    ],
)
def test_a_malformed_providers_file_says_what_is_wrong(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = providers_file(tmp_path, text)

    with pytest.raises(ProviderConfigError) as raised:
        find_account("relay", with_file(path), {})

    assert str(raised.value).startswith(f"providers file {path}")
    assert problem in str(raised.value)


def test_a_yaml_error_does_not_repeat_the_line_it_is_on(tmp_path: Path) -> None:
    # The broken line may hold a credential: the message gives its place, not its text.
    path = providers_file(tmp_path, 'accounts:\n  relay:\n    secret: "sk-live-123\n')

    with pytest.raises(ProviderConfigError) as raised:
        read_providers_file(path, {})

    assert "line 4, column 1" in str(raised.value)
    assert "sk-live-123" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_a_missing_providers_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderConfigError, match="No such file or directory"):
        find_account("sendgrid", with_file(tmp_path / "absent.yaml"), {})


def test_configured_accounts_are_the_channels_accounts_and_every_file_account(
    tmp_path: Path,
) -> None:
    settings = with_file(
        providers_file(tmp_path, TWO_SENDGRIDS),
        email_provider="sendgrid-eu",
        sms_provider="twilio",
        push_provider="ios=apns,android=fcm,*=local-push",
    )
    environ = {**KEYS, "LIFELINE_TWILIO_ACCOUNT_SID": "AC1", "LIFELINE_APNS_TEAM_ID": "T1"}

    accounts = configured_accounts(settings, environ)

    assert {name: account.provider for name, account in accounts.items()} == {
        "sendgrid-us": "sendgrid",
        "sendgrid-eu": "sendgrid",
        "twilio": "twilio",
        "apns": "apns",
        "fcm": "fcm",
        "local-push": "local-push",
    }
    assert accounts["sendgrid-eu"].require("api_key") == "eu-key"
    assert dict(accounts["twilio"].options) == {"account_sid": "AC1"}
    assert dict(accounts["apns"].options) == {"team_id": "T1"}


# --- Push providers per device platform ----------------------------------------------------


def test_one_push_provider_serves_every_platform() -> None:
    assert Settings(push_provider="apns").push_providers == {"*": "apns"}


def test_push_providers_can_be_given_per_platform() -> None:
    settings = Settings(push_provider=" ios=apns, android = fcm,web=webpush,*=local-push ")

    assert settings.push_providers == {
        "ios": "apns",
        "android": "fcm",
        "web": "webpush",
        "*": "local-push",
    }


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("ios=apns,fcm", "bad entry 'fcm', expected platform=provider"),
        ("ios=", "bad entry 'ios=', expected platform=provider"),
        ("=apns", "bad entry '=apns', expected platform=provider"),
        ("ios=apns=fcm", "bad entry 'ios=apns=fcm', expected platform=provider"),
        ("ios=apns,ios=fcm", "bad entry 'ios=fcm', ios given twice"),
        ("andriod=fcm", "bad entry 'andriod=fcm', the platform is one of ios, android, web or *"),
        ("apns fcm", "'apns fcm' is not a provider name"),
        ("", "'' is not a provider name"),
    ],
)
def test_a_bad_push_provider_setting_names_the_entry(value: str, problem: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(push_provider=value)

    assert f"LIFELINE_PUSH_PROVIDER: {problem}" in str(raised.value)


def test_the_push_provider_setting_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIFELINE_PUSH_PROVIDER", "ios=apns,*=fcm")
    assert Settings().push_providers == {"ios": "apns", "*": "fcm"}

    monkeypatch.setenv("LIFELINE_PUSH_PROVIDER", "ios:apns")
    with pytest.raises(ValidationError, match="LIFELINE_PUSH_PROVIDER: 'ios:apns' is not"):
        Settings()


# --- Delivery: which provider a message goes through ---------------------------------------


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return RulePack(tmp_path / "rules").rules(RULES).write()


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = build_runtime(settings)
    runtime.rules.reload_if_changed()
    runtime.send_job = lambda *job: None
    yield runtime
    runtime.close()


def fake(channel: str, name: str, *, idempotent: bool = True) -> FakeProvider:
    provider = FakeProvider(channel, idempotent=idempotent)
    provider.name = name
    return provider


def use(runtime: Runtime, **by_key: FakeProvider) -> None:
    """Providers by key ('push_ios' stands for 'push:ios', 'push_any' for 'push:*')."""
    keys = {"push_any": "push:*"}
    loaded: dict[str, Provider] = {
        "email": FakeProvider("email"),
        "sms": FakeProvider("sms"),
    }
    for key, provider in by_key.items():
        loaded[keys.get(key, key.replace("_", ":"))] = provider
    runtime.providers = Providers(runtime.settings, loaded)


def push_to(engine: Engine, user_id: str, platform: str, at: dt.datetime | None = None) -> int:
    """A push message queued for a user whose one device is on `platform`."""
    owner = add_user(engine, user_id)
    add_device(engine, owner, platform, f"{platform}-token")
    return add_message(engine, owner, channel="push", status="queued", at=at)


def test_push_goes_through_the_provider_of_the_devices_platform(runtime: Runtime) -> None:
    apns, other = fake("push", "fake-apns"), fake("push", "fake-local")
    use(runtime, push_ios=apns, push_any=other)
    to_ios = push_to(runtime.engine, "u-ios", "ios")
    to_android = push_to(runtime.engine, "u-android", "android")

    send_message(runtime, to_ios)
    send_message(runtime, to_android)

    assert [(c.message_id, c.to, c.platform) for c in apns.calls] == [(to_ios, "ios-token", "ios")]
    assert [(c.message_id, c.to, c.platform) for c in other.calls] == [
        (to_android, "android-token", "android")
    ]
    assert message_row(runtime.engine, to_ios).provider == "fake-apns"
    assert message_row(runtime.engine, to_android).provider == "fake-local"


def test_a_device_on_a_platform_without_a_provider_fails_its_message(runtime: Runtime) -> None:
    apns, fcm = fake("push", "fake-apns"), fake("push", "fake-fcm")
    use(runtime, push_ios=apns, push_android=fcm)
    to_web = push_to(runtime.engine, "u-web", "web")

    send_message(runtime, to_web)

    assert apns.calls == fcm.calls == []
    row = message_row(runtime.engine, to_web)
    assert (row.status, row.attempts) == ("failed", 1)
    assert status_history(runtime.engine, to_web)[-1] == (
        "failed",
        "none (permanent): no push provider for web devices",
    )


def test_the_providers_are_loaded_per_channel_and_push_platform(settings: Settings) -> None:
    runtime = build_runtime(
        settings.model_copy(
            update={"push_provider": "ios=webhook-push,*=local-push", "webhook_url": "http://x/"}
        )
    )
    try:
        loaded = runtime.providers.loaded()
        assert {key: (p.name, p.channel) for key, p in loaded.items()} == {
            "email": ("local-email", "email"),
            "sms": ("local-sms", "sms"),
            "push:ios": ("webhook-push", "push"),
            "push:*": ("local-push", "push"),
        }
        assert runtime.providers.route("push", "ios") is loaded["push:ios"]
        assert runtime.providers.route("push", "android") is loaded["push:*"]
        assert runtime.providers.route("sms", None) is loaded["sms"]
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("android_idempotent", "status", "then"),
    [
        (True, "queued", "sending again with the same idempotency key"),
        (False, "failed", "not sent again, to avoid sending twice"),
    ],
)
def test_a_stuck_push_is_sent_again_only_if_every_push_provider_is_idempotent(
    runtime: Runtime, android_idempotent: bool, status: str, then: str
) -> None:
    apns = fake("push", "fake-apns")
    fcm = fake("push", "fake-fcm", idempotent=android_idempotent)
    use(runtime, push_ios=apns, push_android=fcm)
    stuck_after = dt.timedelta(seconds=runtime.settings.stuck_send_seconds)
    long_ago = utcnow() - stuck_after - minutes(5)
    # Its device is an iPhone, but which provider it went through is not recorded.
    stuck = push_to(runtime.engine, "u-1", "ios", at=long_ago)
    with unit_of_work(runtime.engine) as uow:  # claimed, then the worker died mid-call
        index = runtime.rules.current()
        assert index is not None
        assert claim(uow.session, index, LINKS, stuck, long_ago + minutes(1)) is not None

    sweep_messages(runtime)

    row = message_row(runtime.engine, stuck)
    assert (row.status, row.status_reason) == (
        status,
        f"its worker stopped during the call to fake-apns or fake-fcm; {then}",
    )


# --- A provider that cannot be built --------------------------------------------------------

NO_URL = """
accounts:
  relay:
    provider: webhook-email
    secret: relay-secret-value
"""
UNSET_URL = """
accounts:
  relay:
    provider: webhook-email
    url: ${LIFELINE_TEST_RELAY_URL_NEVER_SET}
    secret: relay-secret-value
"""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            NO_URL, "the relay provider needs LIFELINE_WEBHOOK_URL (or option 'url')", id="no-url"
        ),
        pytest.param(
            UNSET_URL,
            "url: environment variable LIFELINE_TEST_RELAY_URL_NEVER_SET is not set",
            id="unset-variable",
        ),
    ],
)
def test_an_account_that_cannot_be_built_leaves_the_message_queued_and_is_logged(
    settings: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    text: str,
    problem: str,
) -> None:
    settings = settings.model_copy(
        update={
            "providers_file": providers_file(tmp_path, text),
            "email_provider": "relay",
            "webhook_url": None,
        }
    )
    runtime = build_runtime(settings)
    try:
        runtime.rules.reload_if_changed()
        owner = add_user(runtime.engine, "u-1", email="ada@example.com")
        welcome = add_message(runtime.engine, owner, channel="email", status="queued")
        caplog.set_level(logging.INFO)
        worker = dramatiq.Worker(runtime.broker, worker_threads=1, worker_timeout=50)
        worker.start()
        try:
            assert sweep_messages(runtime) == 1  # hands it to the broker
            assert isinstance(runtime.broker, StubBroker)
            runtime.broker.join(MESSAGES_QUEUE, timeout=10_000)
            worker.join()
        finally:
            worker.stop()
        row = message_row(runtime.engine, welcome)
    finally:
        runtime.close()
    # Not claimed: once the account is fixed, the sweep hands it to a worker again.
    assert (row.status, row.attempts, row.claimed_at) == ("queued", 0, None)
    # One line, no traceback: the job itself succeeds, so Dramatiq does not retry it.
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.exc_info is None
    assert error.getMessage().startswith("1 message(s) wait: a provider cannot be loaded: ")
    assert problem in error.getMessage()
    assert "relay-secret-value" not in caplog.text


# --- The local and webhook providers as accounts -------------------------------------------


def test_a_webhook_account_in_the_providers_file_posts_to_its_own_url(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/relay", method="POST").respond_with_json({"id": "r-1"})
    path = providers_file(
        tmp_path,
        f"""
        accounts:
          relay:
            provider: webhook-email
            url: {httpserver.url_for("/relay")}
            secret: account-secret
            timeout: 2
        """,
    )
    settings = with_file(
        path, webhook_url="http://unused.invalid/", webhook_secret="settings-secret"
    )

    provider = load_provider("relay", settings)

    assert isinstance(provider, Webhook)
    assert (provider.name, provider.channel) == ("relay", "email")
    assert provider.client.timeout == httpx.Timeout(2)
    assert provider.send(EMAIL).provider_message_id == "r-1"
    [(request, _)] = httpserver.log
    assert json.loads(request.data)["to"] == "ada@example.com"
    signature = hmac.new(b"account-secret", request.data, hashlib.sha256).hexdigest()
    assert request.headers["X-Lifeline-Signature"] == f"sha256={signature}"


def test_a_webhook_account_without_options_uses_the_webhook_settings() -> None:
    account = Account("webhook-sms", "webhook-sms")
    settings = Settings(webhook_url="https://relay.example/", webhook_timeout_seconds=4)

    provider = build_adapter(account, settings)

    assert isinstance(provider, Webhook)
    assert (provider.url, provider.secret) == ("https://relay.example/", None)
    assert provider.client.timeout == httpx.Timeout(4)


def test_a_local_account_writes_to_its_own_outbox_with_its_own_sender(tmp_path: Path) -> None:
    path = providers_file(
        tmp_path,
        f"""
        accounts:
          outbox-eu:
            provider: local-email
            outbox_dir: {tmp_path / "eu"}
            from: Shop EU <eu@shop.example>
        """,
    )
    settings = with_file(path, outbox_dir=tmp_path / "default")

    provider = load_provider("outbox-eu", settings)
    sent = provider.send(EMAIL)

    assert provider.name == "outbox-eu"
    assert not (tmp_path / "default").exists()
    mail = message_from_bytes((tmp_path / "eu" / str(sent.provider_message_id)).read_bytes())
    assert (mail["From"], mail["To"]) == ("Shop EU <eu@shop.example>", "ada@example.com")


def test_the_local_providers_read_lifeline_local_options_and_email_from(tmp_path: Path) -> None:
    settings = Settings(outbox_dir=tmp_path / "default", email_from="Shop <hi@shop.example>")
    environ = {"LIFELINE_LOCAL_SMS_OUTBOX_DIR": str(tmp_path / "sms")}

    sms = build_adapter(find_account("local-sms", settings, environ), settings)
    email = build_adapter(find_account("local-email", settings, environ), settings)

    assert isinstance(sms, LocalOutbox) and isinstance(email, LocalOutbox)
    assert (sms.outbox, email.outbox) == (tmp_path / "sms", tmp_path / "default")
    sent = email.send(EMAIL)
    mail = message_from_bytes((tmp_path / "default" / str(sent.provider_message_id)).read_bytes())
    assert mail["From"] == "Shop <hi@shop.example>"


def test_a_file_account_named_in_the_email_setting_sends_the_users_email(
    settings: Settings, tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/relay", method="POST").respond_with_json({"id": "r-9"})
    path = providers_file(
        tmp_path,
        f"""
        accounts:
          relay:
            provider: webhook-email
            url: {httpserver.url_for("/relay")}
        """,
    )
    runtime = build_runtime(
        settings.model_copy(update={"providers_file": path, "email_provider": "relay"})
    )
    try:
        runtime.rules.reload_if_changed()
        owner = add_user(runtime.engine, "u-1", email="ada@example.com")
        welcome = add_message(runtime.engine, owner, channel="email", status="queued")

        send_message(runtime, welcome)

        row = message_row(runtime.engine, welcome)
    finally:
        runtime.close()
    assert (row.status, row.provider, row.provider_message_id) == ("sent", "relay", "r-9")
    [(request, _)] = httpserver.log
    assert request.headers["Idempotency-Key"] == f"lifeline-message-{welcome}"
