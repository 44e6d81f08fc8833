"""Every setting Lifeline reads, in one place. Environment variables use the LIFELINE_ prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    push_provider: str = Field(default="local-push", description="Provider for push.")
    max_send_attempts: int = Field(
        default=5, ge=1, description="Provider attempts before a message is failed."
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
