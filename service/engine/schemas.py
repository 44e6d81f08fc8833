"""The rule endpoints' JSON bodies."""

from __future__ import annotations

import datetime as dt

from service.kit.schemas import Schema


class RulesOut(Schema):
    directory: str
    version: str | None
    loaded_at: dt.datetime | None
    rules: int
    errors: list[str]
    checked_at: dt.datetime | None
