"""What a provider adapter is: the typed interface delivery talks to.

Adapters live in workers/providers/<channel>/<name>.py and are found by name through the
`lifeline.providers` entry points, so a package can add one without touching Lifeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

ErrorKind = Literal["retryable", "permanent", "address_gone"]


@dataclass(frozen=True)
class Outgoing:
    """One rendered message, ready for a provider."""

    message_id: int
    channel: str
    to: str  # email address, E.164 number or device token
    content: dict[str, str]  # the rendered template section (subject/html/text, body, ...)
    headers: dict[str, str] = field(default_factory=dict)  # e.g. List-Unsubscribe for email
    idempotency_key: str = ""


@dataclass(frozen=True)
class Sent:
    provider_message_id: str | None = None


class ProviderError(Exception):
    """A send that did not happen, classified so delivery knows whether to try again."""

    def __init__(self, kind: ErrorKind, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retry_after = retry_after


class Provider(Protocol):
    name: str
    channel: str
    # True when the provider accepts an idempotency key: re-sending after an unknown outcome
    # (a worker killed during the call) cannot reach the person twice.
    idempotent: bool

    def send(self, message: Outgoing) -> Sent:
        """Hand the message over; raise ProviderError when it was not accepted."""
        ...
