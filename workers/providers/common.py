"""What provider adapters share beyond HTTP: reading webhook fields, and reading options."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.delivery.providers import Account, ProviderConfigError

# --- webhook fields: a provider's JSON or form, trusted for nothing but its shape -----------------


def epoch_time(value: object) -> dt.datetime:
    """Epoch seconds as an aware datetime; no time given means when the report reached us."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return dt.datetime.now(dt.UTC)


def iso_time(value: object) -> dt.datetime | None:
    """An ISO 8601 time as an aware datetime (UTC when it names no zone), else None."""
    if not isinstance(value, str):
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def our_message_id(value: object) -> int | None:
    """The lifeline_message_id we sent as metadata. Providers hand it back as text, and some
    (Mailgun) as a number when it looks like one."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    return int(text) if text.isdigit() else None


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def mapping_or_empty(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# --- options ----------------------------------------------------------------------------------


def setting(account: Account, key: str) -> str:
    """How the user sets option `key` (e.g. LIFELINE_TWILIO_FROM), for error messages."""
    return account.where.replace("{KEY}", key.upper()).replace("{key}", key) or f"option {key!r}"


def advice(account: Account, key: str) -> str:
    """How to set `key`, in the account's own words; empty when it is set."""
    try:
        account.require(key)
    except ProviderConfigError as exc:
        return str(exc)
    return ""


def refusal_while_unset(account: Account, key: str) -> str:
    """Why webhooks are refused while `key` is not set: the account's advice on setting it."""
    missing = advice(account, key)
    return f"webhooks are refused: {missing}" if missing else ""


def inline_or_file(account: Account, inline: str, file: str, what: str) -> tuple[str, str]:
    """A secret given as option `inline` (its text) or else as option `file` (a path to it),
    with the option it came from, so later errors can name it."""
    text = account.get(inline)
    if text is not None:
        return text, inline
    path = account.get(file)
    if path is None:
        raise ProviderConfigError(
            f"provider account {account.name!r} ({account.provider}) needs {what}: set "
            f"{setting(account, file)} (a path) or {setting(account, inline)} (the text itself)"
        )
    try:
        return Path(path).read_text(encoding="utf-8"), file
    except OSError as exc:
        raise ProviderConfigError(
            f"provider account {account.name!r}: cannot read {file}: {exc.strerror or exc}"
        ) from exc
