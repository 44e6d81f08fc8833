"""JSON responses rendered with orjson (fast, and datetimes as RFC 3339), and the answers the
endpoints share."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import HTTPException
from fastapi.responses import JSONResponse


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def no_user(user_id: str) -> HTTPException:
    """The 404 of every /v1/users/{user_id}/... endpoint for a user Lifeline does not know."""
    return HTTPException(status_code=404, detail=f"no user {user_id!r}")
