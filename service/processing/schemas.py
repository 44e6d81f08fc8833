"""The erasure endpoint's JSON body."""

from __future__ import annotations

import datetime as dt

from service.kit.schemas import Schema


class Erased(Schema):
    user_id: str
    erased_at: dt.datetime
    events_scrubbed: int
