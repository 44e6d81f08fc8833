"""Admin API authorisation: `Authorization: Bearer $LIFELINE_ADMIN_TOKEN`."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from service.kit.state import AppState


def require_admin(request: Request) -> None:
    state: AppState = request.app.state.lifeline
    expected = state.settings.admin_token
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if (
        expected is None
        or not expected.get_secret_value()
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(token.strip().encode(), expected.get_secret_value().encode())
    ):
        raise HTTPException(
            status_code=401,
            detail="admin API: send Authorization: Bearer <LIFELINE_ADMIN_TOKEN>"
            + ("" if expected else " (no LIFELINE_ADMIN_TOKEN is set on the server)"),
            headers={"WWW-Authenticate": "Bearer"},
        )
