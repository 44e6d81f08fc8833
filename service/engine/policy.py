"""The contact policy, in one place: what rules/policy.yaml says (frequency caps, quiet hours,
the default timezone) and how it is enforced, both when a send step plans its message
(engine.planning) and again right before the message is claimed for its provider
(delivery.service).

The file's format stays here rather than in staff_format: it is forty lines that mean nothing
without the rules below, and a cap's wording in policy.yaml, its JSON Schema and the way it is
counted should change together.

The rules, for messages that are not transactional (transactional ones bypass the policy):
- Caps apply to messages to the user's own address. An address taken from the event (`to:`)
  is someone else's, so neither is it capped nor does it count.
- What counts against a cap is a message that went out: claimed for its provider, whatever
  happened to it after (delivered or bounced, opened, complained of). Its moment is when it
  was claimed, and it counts while that moment is less than the cap's `per` ago. Skipped and
  failed messages never reached the user and do not count; transactional ones do.
- While a message is being planned, the user's messages still queued count too: they are on
  their way, and planning cannot tell which will go first. At the claim, the message going
  out now goes before every one still queued, and each of those is checked again when its own
  turn comes.
- Quiet hours defer a message on their channels to the end of them, in the user's timezone
  (the policy's default when it is unknown).
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Collection
from dataclasses import dataclass

from pydantic import Field, field_validator, model_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.engine.staff_format import Channel
from service.kit.staff_format import Duration, Strict
from service.models import Message, MessageStatus

_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class Cap(Strict):
    """At most `max` messages per user in any window of `per` (sliding)."""

    max: int = Field(ge=0)
    per: Duration
    channel: Channel | None = Field(default=None, description="unset: across all channels")


def _quiet_channels() -> list[Channel]:
    return ["sms", "push"]


class QuietHours(Strict):
    start: str = Field(description="local time quiet hours begin, HH:MM (e.g. 21:00)")
    end: str = Field(description="local time they end, HH:MM (e.g. 08:00)")
    channels: list[Channel] = Field(default_factory=_quiet_channels)

    @model_validator(mode="after")
    def _times(self) -> QuietHours:
        for value in (self.start, self.end):
            if not _TIME.match(value):
                raise ValueError(f"{value!r} is not a time of day such as 21:00")
        return self


class Policy(Strict):
    caps: list[Cap] = Field(default_factory=list)
    quiet_hours: QuietHours | None = None
    default_timezone: str = Field(default="UTC", description="for users whose timezone is unknown")
    max_sends_per_event: int = Field(
        default=1, ge=1, description="how many rules may send because of one event (by priority)"
    )

    @field_validator("default_timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value


# --- frequency caps ------------------------------------------------------------------------

# A message in one of these went out: it was claimed for its provider ("sending" included, so
# one claimed earlier in the same batch, or whose provider call is under way, counts).
WENT_OUT: tuple[MessageStatus, ...] = (
    MessageStatus.SENDING,
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.OPENED,
    MessageStatus.CLICKED,
    MessageStatus.BOUNCED,
    MessageStatus.COMPLAINED,
    MessageStatus.UNSUBSCRIBED,
)


def caps_apply(transactional: bool, to_address: str | None) -> bool:
    return not transactional and to_address is None


def quiet_hours_apply(transactional: bool) -> bool:
    return not transactional


@dataclass
class CapCounts:
    """The messages that count against the caps, for a set of users: per user, per channel and
    per window (each distinct `per` of the caps). One query reads them for a whole batch."""

    policy: Policy
    windows: tuple[dt.timedelta, ...]
    counts: dict[int, dict[str, list[int]]]  # profile id -> channel -> count in each window

    @classmethod
    def load(
        cls,
        session: Session,
        policy: Policy,
        profile_ids: Collection[int],
        now: dt.datetime,
        *,
        planning: bool,
    ) -> CapCounts:
        """`planning`: for a message being planned, so the user's queued messages count too."""
        windows = tuple(sorted({cap.per for cap in policy.caps}))
        counts: dict[int, dict[str, list[int]]] = {}
        if not windows or not profile_ids:
            return cls(policy, windows, counts)
        # When it went out; a message recorded without a claim, or still queued: when it is due.
        at = func.coalesce(Message.claimed_at, Message.send_at)
        statuses = (*WENT_OUT, MessageStatus.QUEUED) if planning else WENT_OUT
        query = (
            select(
                Message.profile_id,
                Message.channel,
                *(func.count().filter(at > now - per) for per in windows),
            )
            .where(
                Message.profile_id.in_(profile_ids),
                Message.to_address.is_(None),
                Message.status.in_(statuses),
                at > now - windows[-1],
            )
            .group_by(Message.profile_id, Message.channel)
        )
        for profile_id, channel, *in_windows in session.execute(query):
            assert profile_id is not None  # the query asks for these users only
            counts.setdefault(profile_id, {})[channel] = [int(n) for n in in_windows]
        return cls(policy, windows, counts)

    def reached(self, profile_id: int, channel: str) -> Cap | None:
        """The first cap that one more message to the user on `channel` would go over."""
        by_channel = self.counts.get(profile_id, {})
        for cap in self.policy.caps:
            if cap.channel not in (None, channel):
                continue
            window = self.windows.index(cap.per)
            counted = sum(
                in_windows[window]
                for other, in_windows in by_channel.items()
                if cap.channel is None or other == channel
            )
            if counted >= cap.max:
                return cap
        return None

    def went_out(self, profile_id: int, channel: str) -> None:
        """A message to the user's own address went out just now: it counts in every window."""
        if not self.windows:
            return
        in_windows = self.counts.setdefault(profile_id, {}).setdefault(
            channel, [0] * len(self.windows)
        )
        in_windows[:] = [n + 1 for n in in_windows]


# --- quiet hours and local time --------------------------------------------------------------


def user_zone(policy: Policy, timezone: str | None) -> zoneinfo.ZoneInfo:
    """The user's timezone (`timezone`, theirs when known), else the policy's default."""
    return zoneinfo.ZoneInfo(timezone or policy.default_timezone)


def next_local_time(local_now: dt.datetime, hhmm: str, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The next moment at or after local_now whose local time is hhmm, in UTC."""
    hour, minute = (int(x) for x in hhmm.split(":"))
    candidate = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local_now:
        candidate = (candidate + dt.timedelta(days=1)).replace(hour=hour, minute=minute)
    # Round-trip through the zone so a DST gap lands on a real instant.
    return candidate.replace(tzinfo=zone).astimezone(dt.UTC)


def quiet_until(
    policy: Policy, channel: str, timezone: str | None, now: dt.datetime
) -> dt.datetime | None:
    """When quiet hours end on this channel for a user in `timezone`, if they are in them now."""
    quiet = policy.quiet_hours
    if quiet is None or channel not in quiet.channels:
        return None
    zone = user_zone(policy, timezone)
    local = now.astimezone(zone).replace(tzinfo=None)
    hhmm = f"{local:%H:%M}"
    inside = (
        (quiet.start <= hhmm < quiet.end)
        if quiet.start < quiet.end
        else (hhmm >= quiet.start or hhmm < quiet.end)
    )
    return next_local_time(local, quiet.end, zone) if inside else None
