"""What a provider adapter is: the typed interfaces delivery and the webhook endpoint use.

Adapters live in workers/providers/<channel>/<name>.py and are found by name through the
`lifeline.providers` entry points, so a package can add one without touching Lifeline. An
entry point is a factory `(account, settings) -> adapter`; the adapter sends (`Provider`) and,
when its provider reports delivery results, verifies and reads those reports
(`WebhookReceiver`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import parse_qsl

from service.kit.settings import Settings

ENTRY_POINTS = "lifeline.providers"

ErrorKind = Literal["retryable", "permanent", "address_gone"]


class ProviderConfigError(ValueError):
    """A provider account that cannot be built: a missing credential, a bad option."""


@dataclass(frozen=True)
class Account:
    """One configured provider account: the name it goes by (in LIFELINE_EMAIL_PROVIDER and
    friends, in rate limits, in /v1/webhooks/{name}), the adapter it uses, and its options
    (credentials, base URL, sender), read from the environment or the providers file."""

    name: str
    provider: str
    # Not in repr: options hold credentials, and a repr ends up in logs and error reports.
    options: Mapping[str, str] = field(default_factory=dict, repr=False)
    where: str = ""  # how to set an option, for error messages: "LIFELINE_SENDGRID_{KEY}"

    def get(self, key: str, default: str | None = None) -> str | None:
        value = self.options.get(key)
        return value if value not in (None, "") else default

    def require(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            where = self.where.replace("{KEY}", key.upper()).replace("{key}", key)
            raise ProviderConfigError(
                f"provider account {self.name!r} ({self.provider}) needs {key!r}: set {where}"
            )
        return value


@dataclass(frozen=True)
class Outgoing:
    """One rendered message, ready for a provider."""

    message_id: int
    channel: str
    to: str  # email address, E.164 number or device token (Web Push: subscription JSON)
    content: dict[str, str]  # the rendered template section (subject/html/text, body, ...)
    headers: dict[str, str] = field(default_factory=dict)  # e.g. List-Unsubscribe for email
    idempotency_key: str = ""
    platform: str | None = None  # push: the device's platform (ios, android, web)


@dataclass(frozen=True)
class Sent:
    provider_message_id: str | None = None


class ProviderError(Exception):
    """A send that did not happen, classified so delivery knows whether to try again.

    `address_gone`: the address or device no longer exists (APNs 410, FCM UNREGISTERED, a
    hard bounce) or its owner opted out at the provider (Twilio 21610); delivery disables the
    device, suppresses the address or records the opt-out.
    """

    def __init__(self, kind: ErrorKind, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retry_after = retry_after


class Provider(Protocol):
    name: str  # the account name
    channel: str
    # True when the provider accepts an idempotency key: re-sending after an unknown outcome
    # (a worker killed during the call) cannot reach the person twice.
    idempotent: bool

    def send(self, message: Outgoing) -> Sent:
        """Hand the message over; raise ProviderError when it was not accepted."""
        ...


# --- Delivery reports -------------------------------------------------------------------------

ReportStatus = Literal[
    "delivered", "opened", "clicked", "bounced", "complained", "unsubscribed", "failed"
]


@dataclass(frozen=True)
class Inbound:
    """A webhook request exactly as it arrived, for verification and parsing."""

    url: str  # as the provider called it: LIFELINE_PUBLIC_URL + path + query
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    method: str = "POST"

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Report:
    """One delivery result from a provider, in Lifeline's terms.

    `event_id` is unique per provider event, so a replayed webhook changes nothing. A report
    names the message by our id (providers that echo metadata we sent) or by the provider's
    own message id. `bounced` is a hard bounce; soft bounces and deferrals are not reported.
    """

    event_id: str
    status: ReportStatus
    at: dt.datetime
    message_id: int | None = None
    provider_message_id: str | None = None
    address: str | None = None
    detail: str | None = None
    url: str | None = None  # the link, for `clicked`


@dataclass(frozen=True)
class WebhookResult:
    reports: list[Report] = field(default_factory=list)
    # Amazon SNS SubscriptionConfirmation: GET this URL to start receiving notifications.
    confirm_url: str | None = None
    # Some providers expect a particular answer body (Twilio: empty TwiML is fine as "").
    response_body: str = ""
    response_type: str = "text/plain"


class WebhookRejected(Exception):
    """The request is not provably from the provider: answered 401, nothing changes."""


@runtime_checkable
class WebhookReceiver(Protocol):
    def verify_webhook(self, request: Inbound) -> None:
        """Raise WebhookRejected unless the request carries a valid signature (or the
        documented credentials) of this account."""
        ...

    def parse_webhook(self, request: Inbound) -> WebhookResult:
        """The reports in a verified request; raise ValueError for a body that cannot be
        read (answered 400)."""
        ...


# --- The registry -----------------------------------------------------------------------------


def build_adapter(account: Account, settings: Settings) -> Any:
    """The adapter for `account`, built by its provider's entry point; it takes its
    credentials from the account's options. Raises LookupError for an unknown provider and
    ProviderConfigError for a missing option."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}
    if account.provider not in found:
        known = ", ".join(sorted(found)) or "none"
        raise LookupError(f"no provider {account.provider!r} is installed (installed: {known})")
    factory = found[account.provider].load()
    return factory(account, settings)
