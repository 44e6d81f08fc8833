"""Durations as staff write them: 30m, 24h, 2d, 1w (and combinations such as 1d12h)."""

from __future__ import annotations

import datetime as dt
import re

_PART = re.compile(r"(\d+)\s*([smhdw])")
_WHOLE = re.compile(r"^\s*(\d+\s*[smhdw]\s*)+$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> dt.timedelta:
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise ValueError(
            f"bad duration {text!r}: write a number and a unit (m, h, d or w), e.g. 30m, 24h, 2d"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"bad duration {text!r}: must be longer than zero")
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
