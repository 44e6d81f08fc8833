"""What HTTP provider adapters share: one client per account, and turning a failed call into
a classified ProviderError."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterable
from typing import Any

import httpx

from service.delivery.providers import Account, ProviderError

EXCERPT_CHARS = 200
DEFAULT_TIMEOUT = 10.0
# A worker process makes up to LIFELINE_SEND_CONCURRENCY calls at once: keep that many
# connections alive rather than opening new ones under load.
LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=256)


def client_for(account: Account, **options: Any) -> httpx.Client:
    """A client kept for the account's lifetime, so connections are reused across messages.
    Option `timeout` (seconds) bounds every call."""
    timeout = float(account.get("timeout", str(DEFAULT_TIMEOUT)) or DEFAULT_TIMEOUT)
    return httpx.Client(timeout=timeout, limits=LIMITS, **options)


def base_url(account: Account, default: str) -> str:
    """The account's `base_url` (regional endpoints, proxies, tests) or the provider's."""
    return (account.get("base_url") or default).rstrip("/")


def call(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Make the call; timeouts and connection failures are retryable."""
    try:
        return client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise ProviderError("retryable", f"timed out: {type(exc).__name__}") from exc
    except httpx.TransportError as exc:
        raise ProviderError("retryable", f"{type(exc).__name__}: {exc}") from exc


def fail(
    response: httpx.Response,
    reason: str | None = None,
    *,
    gone: Iterable[int] = (),
) -> ProviderError:
    """The error for a non-2xx answer: 408, 429 (honouring Retry-After) and 5xx retry;
    statuses in `gone` mean the address or device no longer exists; the rest are permanent."""
    status = response.status_code
    reason = f"HTTP {status}: {reason or excerpt(response)}"
    if status in (408, 429) or status >= 500:
        return ProviderError("retryable", reason, retry_after(response))
    if status in set(gone):
        return ProviderError("address_gone", reason)
    return ProviderError("permanent", reason)


def excerpt(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds, given as seconds or as an HTTP date."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
