"""Building blocks of the formats operations staff write (rules, lifecycle, policy, tests):
models that refuse unknown fields, and durations written as 30m, 24h, 2d."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema

from service.kit.durations import format_duration, parse_duration

Duration = Annotated[
    dt.timedelta,
    # Anything but text is refused: a bare number such as `within: 7` would otherwise be
    # taken as seconds.
    BeforeValidator(lambda v: v if isinstance(v, dt.timedelta) else parse_duration(v)),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^(\d+[smhdw])+$", "examples": ["30m", "24h", "2d", "1w"]}
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
