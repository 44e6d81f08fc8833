"""Admin API for the rule set: what is live, and why an edit did not load."""

from __future__ import annotations

import asyncio
import datetime as dt

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from service.kit.auth import require_admin
from service.kit.state import AppState

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class RulesOut(BaseModel):
    directory: str
    version: str | None
    loadedAt: dt.datetime | None
    rules: int
    errors: list[str]
    checkedAt: dt.datetime | None


@router.get("/rules", response_model=RulesOut, summary="The live rule set and any load errors")
async def rules_status(request: Request) -> RulesOut:
    state: AppState = request.app.state.lifeline
    await asyncio.to_thread(state.rules.reload_if_changed)
    status = state.rules.status
    return RulesOut(
        directory=status.directory,
        version=status.version,
        loadedAt=status.loaded_at,
        rules=status.rules,
        errors=status.errors,
        checkedAt=status.checked_at,
    )
