"""Contact pressure, in one place: rules/policy.yaml."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from pydantic import Field, field_validator, model_validator

from service.engine.staff_format import Channel
from service.kit.staff_format import Duration, Strict
from service.models import User

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


def user_zone(policy: Policy, user: User) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(user.timezone or policy.default_timezone)


def next_local_time(local_now: dt.datetime, hhmm: str, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The next moment at or after local_now whose local time is hhmm, in UTC."""
    hour, minute = (int(x) for x in hhmm.split(":"))
    candidate = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local_now:
        candidate = (candidate + dt.timedelta(days=1)).replace(hour=hour, minute=minute)
    # Round-trip through the zone so a DST gap lands on a real instant.
    return candidate.replace(tzinfo=zone).astimezone(dt.UTC)


def quiet_until(policy: Policy, channel: str, user: User, now: dt.datetime) -> dt.datetime | None:
    """When quiet hours end for this user and channel, if they are in them now."""
    quiet = policy.quiet_hours
    if quiet is None or channel not in quiet.channels:
        return None
    zone = user_zone(policy, user)
    local = now.astimezone(zone).replace(tzinfo=None)
    hhmm = f"{local:%H:%M}"
    inside = (
        (quiet.start <= hhmm < quiet.end)
        if quiet.start < quiet.end
        else (hhmm >= quiet.start or hhmm < quiet.end)
    )
    return next_local_time(local, quiet.end, zone) if inside else None
