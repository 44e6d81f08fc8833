"""Per-provider send rate limits (LIFELINE_RATE_LIMITS), counted by Dramatiq window rate
limiters.

With a redis:// broker the counts live in that Redis, so all worker processes share one limit
per provider. With memory:// or amqp:// they live in each process: every worker process may
then call a provider up to the whole limit on its own.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

import redis
from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend, StubBackend

from service.delivery.sending import Throttled
from service.kit.settings import RateLimit, Settings

KEY_PREFIX = "lifeline:send-rate:"
# Redis unreachable: the message waits rather than risk going over a provider's limit.
UNCHECKED_WAIT = dt.timedelta(seconds=5)


class SendLimits:
    def __init__(
        self,
        limits: Mapping[str, RateLimit],
        backend: RedisBackend | StubBackend,
        client: redis.Redis | None = None,
    ) -> None:
        self.limits = dict(limits)
        self._limiters = {
            name: WindowRateLimiter(  # type: ignore[no-untyped-call]
                backend, KEY_PREFIX + name, limit=limit.count, window=limit.window_seconds
            )
            for name, limit in self.limits.items()
        }
        self._client = client

    def take_slot(self, provider: str) -> Throttled | None:
        """Count one call to `provider`; None when the call is within its limit."""
        limiter = self._limiters.get(provider)
        if limiter is None:
            return None
        limit = self.limits[provider]
        try:
            with limiter.acquire(raise_on_failure=False) as acquired:
                if acquired:
                    return None
        except redis.RedisError as exc:
            return Throttled(
                UNCHECKED_WAIT, f"rate limit of {provider} not checked: {type(exc).__name__}"
            )
        # The average gap between calls within the limit, at least a second.
        wait = dt.timedelta(seconds=math.ceil(limit.window_seconds / limit.count))
        return Throttled(wait, f"rate limited by {provider}: {limit}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def build_send_limits(settings: Settings) -> SendLimits:
    scheme = settings.broker_url.split("://", 1)[0].lower()
    if settings.rate_limits and scheme in ("redis", "rediss"):
        client = redis.Redis.from_url(settings.broker_url)
        return SendLimits(settings.rate_limits, RedisBackend(client=client), client)
    return SendLimits(settings.rate_limits, StubBackend())  # type: ignore[no-untyped-call]
