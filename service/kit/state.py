"""What the API process holds while it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from service.engine.registry import RuleRegistry
from service.ingest.dispatch import EventDispatcher
from service.ingest.sources import SourceCache
from service.ingest.writer import EventWriter
from service.kit.settings import Settings


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sources: SourceCache
    writer: EventWriter
    dispatcher: EventDispatcher
    ping_broker: Callable[[], None]
    rules: RuleRegistry
    # Provider adapters for delivery webhooks by account name, built on first use (or the
    # ProviderConfigError that stopped one); see service.delivery.webhooks.
    webhook_adapters: dict[str, Any] = field(default_factory=dict)
    webhook_accounts: dict[str, Any] | None = None  # the configured accounts, read once
