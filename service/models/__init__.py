"""Every table, in one package at the bottom of the layers: each domain reads and writes the
tables it needs, none owns another's. Importing this package registers them all on
Base.metadata (migrations and tests rely on that)."""

from service.models.consent import Subscription, Suppression
from service.models.event import Event, Source
from service.models.journey import Decision, Journey, RuleVersion, ScheduleRun
from service.models.message import Message, MessageStatus, MessageStatusChange
from service.models.stage_change import StageChange
from service.models.user import Device, ErasedAddress, Identity, User
from service.models.webhook_event import WebhookEvent

__all__ = [
    "Decision",
    "Device",
    "ErasedAddress",
    "Event",
    "Identity",
    "Journey",
    "Message",
    "MessageStatus",
    "MessageStatusChange",
    "RuleVersion",
    "ScheduleRun",
    "Source",
    "StageChange",
    "Subscription",
    "Suppression",
    "User",
    "WebhookEvent",
]
