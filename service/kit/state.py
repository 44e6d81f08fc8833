"""What the API process holds while it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from service.ingest.sources import SourceCache
from service.kit.db import JobSender
from service.kit.settings import Settings


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sources: SourceCache
    send_job: JobSender
    ping_broker: Callable[[], None]
