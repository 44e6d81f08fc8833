"""Every setting Lifeline reads, in one place. Environment variables use the LIFELINE_ prefix."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


@dataclass(frozen=True)
class RateLimit:
    """At most `count` provider calls in any `window_seconds`."""

    count: int
    window_seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{'s' if self.window_seconds == 1 else 'm'}"


RATE_LIMIT_ENTRY = re.compile(r"(?P<name>[^=\s]+)\s*=\s*(?P<count>\d+)\s*/\s*(?P<unit>\w+)")
RATE_LIMIT_WINDOWS = {"s": 1, "m": 60}


def parse_rate_limits(text: str) -> dict[str, RateLimit]:
    """'webhook-email=100/s, twilio=30/m' -> a limit per provider name."""
    limits: dict[str, RateLimit] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        match = RATE_LIMIT_ENTRY.fullmatch(entry)
        if match is None:
            raise ValueError(
                f"LIFELINE_RATE_LIMITS: bad entry {entry!r}, expected provider=count/s "
                "or provider=count/m"
            )
        name, count, unit = match["name"], int(match["count"]), match["unit"]
        if unit not in RATE_LIMIT_WINDOWS:
            raise ValueError(f"LIFELINE_RATE_LIMITS: bad entry {entry!r}, unit must be s or m")
        if count < 1:
            raise ValueError(f"LIFELINE_RATE_LIMITS: bad entry {entry!r}, count must be >= 1")
        if name in limits:
            raise ValueError(f"LIFELINE_RATE_LIMITS: bad entry {entry!r}, {name} given twice")
        limits[name] = RateLimit(count, RATE_LIMIT_WINDOWS[unit])
    return limits


PUSH_PLATFORMS = ("ios", "android", "web")  # what a device's platform can be
PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def parse_push_providers(text: str) -> dict[str, str]:
    """'apns' -> {'*': 'apns'}; 'ios=apns, web=webpush' -> {'ios': 'apns', 'web': 'webpush'}.
    A misspelt platform is an error, not a platform whose devices silently get nothing."""
    if "=" not in text:
        name = text.strip()
        if not PROVIDER_NAME.fullmatch(name):
            raise ValueError(
                f"LIFELINE_PUSH_PROVIDER: {text!r} is not a provider name; give one name, or "
                "platform=provider pairs such as 'ios=apns,android=fcm'"
            )
        return {"*": name}
    found: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        platform, _, name = (part.strip() for part in entry.partition("="))
        if not platform or not PROVIDER_NAME.fullmatch(name):
            raise ValueError(
                f"LIFELINE_PUSH_PROVIDER: bad entry {entry!r}, expected platform=provider"
            )
        if platform not in (*PUSH_PLATFORMS, "*"):
            raise ValueError(
                f"LIFELINE_PUSH_PROVIDER: bad entry {entry!r}, the platform is one of "
                f"{', '.join(PUSH_PLATFORMS)} or * (any other)"
            )
        if platform in found:
            raise ValueError(f"LIFELINE_PUSH_PROVIDER: bad entry {entry!r}, {platform} given twice")
        found[platform] = name
    return found


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./lifeline.db",
        description="SQLAlchemy URL. postgresql://... in production; an SQLite file by default.",
    )
    broker_url: str = Field(
        default="memory://",
        description="Dramatiq broker: memory:// (in-process), redis://... or amqp://...",
    )
    rules_dir: Path = Field(default=Path("./rules"), description="Folder of YAML rules.")
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for the admin API. Unset: the admin API answers 401.",
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    scheduler_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often the scheduler wakes due journeys and users."
    )
    sweep_interval_seconds: float = Field(
        default=10.0, gt=0, description="How often the scheduler looks for stuck events."
    )
    sweep_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        description="An event not processed this long after it was enqueued is enqueued again.",
    )
    source_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long the API caches a write key lookup; a revoked key stops "
        "working within this time.",
    )
    worker_timeout_ms: int = Field(
        default=100,
        gt=0,
        description="How long an idle worker waits on the broker before polling again.",
    )
    db_pool_size: int = Field(default=10, gt=0, description="Database connections per process.")
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The address people reach this API at; unsubscribe and preference links "
        "in messages point here.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs unsubscribe and preference links. Required with PostgreSQL; the "
        "embedded default keeps a generated one in ./lifeline.secret.",
    )
    outbox_dir: Path = Field(
        default=Path("./outbox"), description="Where the local providers write messages."
    )
    email_provider: str = Field(default="local-email", description="Provider for email.")
    sms_provider: str = Field(default="local-sms", description="Provider for SMS.")
    push_provider: str = Field(
        default="local-push",
        description="Provider for push: one account, or one per device platform, e.g. "
        "'ios=apns,android=fcm,web=webpush' ('*=' for the rest).",
    )
    providers_file: Path | None = Field(
        default=None,
        description="YAML file of provider accounts (several accounts of one provider, "
        "options referencing ${ENV_VARS}). Unset: each provider reads LIFELINE_<NAME>_<OPTION>.",
    )
    email_from: str = Field(
        default="Lifeline <noreply@localhost>",
        description="The From address of email, unless the account sets its own 'from'.",
    )
    send_concurrency: int = Field(
        default=32,
        gt=0,
        description="Provider calls one worker process makes at a time.",
    )
    max_send_attempts: int = Field(
        default=5, ge=1, description="Provider attempts before a message is failed."
    )
    retry_base_seconds: float = Field(
        default=30.0,
        gt=0,
        description="The first wait after a provider's retryable error; each retry doubles "
        "it, up to an hour.",
    )
    stuck_send_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A message `sending` this long lost its worker mid-call: the scheduler "
        "sends it again (idempotent providers) or fails it.",
    )
    webhook_url: str | None = Field(
        default=None, description="Where the webhook providers POST each message as JSON."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signs webhook bodies: X-Lifeline-Signature: sha256=<HMAC of the body>.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long a webhook call may take before it is retried."
    )

    rate_limits: Annotated[dict[str, RateLimit], NoDecode] = Field(
        default_factory=dict,
        description="Provider calls allowed per second or minute, e.g. "
        "'webhook-email=100/s,twilio=30/m'; shared by all workers through a Redis broker. "
        "Empty: no limits.",
    )

    @property
    def push_providers(self) -> dict[str, str]:
        """Push account by device platform; '*' stands for any other platform."""
        return parse_push_providers(self.push_provider)

    @field_validator("push_provider")
    @classmethod
    def _check_push_provider(cls, value: str) -> str:
        parse_push_providers(value)
        return value

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _parse_rate_limits(cls, value: Any) -> Any:
        return parse_rate_limits(value) if isinstance(value, str) else value


@lru_cache
def get_settings() -> Settings:
    return Settings()
