"""Pure functions that turn Segment traits and context into profile fields."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from typing import Any

import phonenumbers

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def merge_traits(
    current: dict[str, Any],
    current_at: dt.datetime | None,
    incoming: dict[str, Any],
    incoming_at: dt.datetime,
) -> tuple[dict[str, Any], dt.datetime | None]:
    """Later wins: a newer call overwrites, an older one (arriving late) only fills gaps."""
    if current_at is None or incoming_at >= current_at:
        return {**current, **incoming}, incoming_at
    return {**incoming, **current}, current_at


def normalise_email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    if len(value) > 320 or not _EMAIL.match(value):
        return None
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def _region(traits: dict[str, Any]) -> str | None:
    """An ISO 3166 country the caller stated, used to read national-format numbers."""
    address = traits.get("address")
    for candidate in (
        traits.get("country"),
        address.get("country") if isinstance(address, dict) else None,
    ):
        if isinstance(candidate, str) and len(candidate) == 2 and candidate.isalpha():
            return candidate.upper()
    return None


def normalise_phone(value: Any, traits: dict[str, Any]) -> tuple[str | None, bool]:
    """(E.164 number, invalid flag). A number that cannot be read for sure is flagged, not
    guessed: national formats are read only with a country stated in the traits."""
    if value is None or value == "":
        return None, False
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None, True
    try:
        number = phonenumbers.parse(value, _region(traits))
    except phonenumbers.NumberParseException:
        return None, True
    if not phonenumbers.is_valid_number(number):
        return None, True
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), False


def valid_timezone(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
    return value


def valid_locale(value: Any) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*", value):
        return value.replace("_", "-")
    return None
