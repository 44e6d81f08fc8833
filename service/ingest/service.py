"""Turning validated Segment calls into event rows."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from service.ingest.schemas import BatchEnvelope, Call


def corrected_timestamp(
    timestamp: dt.datetime | None, sent_at: dt.datetime | None, received_at: dt.datetime
) -> dt.datetime:
    """Segment's clock-skew correction: the client's clock is off by (sentAt - receivedAt)."""
    if timestamp is None:
        return received_at
    if sent_at is None:
        return timestamp
    try:
        return timestamp + (received_at - sent_at)
    except OverflowError:  # an absurd sentAt: a correction past year 1 or 9999 helps no one
        return timestamp


def _row(
    call: Call, source_id: int, received_at: dt.datetime, envelope: BatchEnvelope | None
) -> dict[str, Any]:
    context = call.context
    integrations = call.integrations
    sent_at = call.sent_at
    if envelope is not None:
        if envelope.context:
            context = {**envelope.context, **(context or {})}
        if envelope.integrations:
            integrations = {**envelope.integrations, **(integrations or {})}
        sent_at = sent_at or envelope.sent_at
    name = getattr(call, "event", None) or getattr(call, "name", None)
    return {
        "source_id": source_id,
        "message_id": call.message_id or str(uuid.uuid4()),
        "type": call.type,
        "name": name,
        "user_id": call.user_id,
        "anonymous_id": call.anonymous_id,
        "previous_id": getattr(call, "previous_id", None),
        "group_id": getattr(call, "group_id", None),
        "properties": getattr(call, "properties", None),
        "traits": getattr(call, "traits", None),
        "context": context,
        "integrations": integrations,
        "original_timestamp": call.timestamp,
        "sent_at": sent_at,
        "timestamp": corrected_timestamp(call.timestamp, sent_at, received_at),
        "received_at": received_at,
        "enqueued_at": received_at,
    }


def event_rows(
    source_id: int,
    calls: list[Call],
    received_at: dt.datetime,
    envelope: BatchEnvelope | None = None,
) -> list[dict[str, Any]]:
    """The rows to store for `calls`; a messageId repeated inside one request counts once."""
    rows: dict[str, dict[str, Any]] = {}
    for call in calls:
        row = _row(call, source_id, received_at, envelope)
        rows.setdefault(row["message_id"], row)
    return list(rows.values())
