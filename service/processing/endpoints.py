"""Admin API for erasing a person (GDPR Art. 17): it reaches every domain's data, so its route
sits here, above them, under the users' path."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from service.kit.auth import require_admin
from service.kit.db import async_unit_of_work
from service.kit.state import AppState
from service.processing.erasure import erase

router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=[Depends(require_admin)])


class Erased(BaseModel):
    userId: str
    erasedAt: dt.datetime
    eventsScrubbed: int


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.lifeline
    return state


@router.delete("/{user_id}", response_model=Erased, summary="Erase a person's personal data")
async def delete_user(user_id: str, request: Request) -> Erased:
    async with async_unit_of_work(_state(request).engine) as uow:
        user, scrubbed = await erase(uow.session, user_id)
    assert user.erased_at is not None
    return Erased(userId=user.user_id, erasedAt=user.erased_at, eventsScrubbed=scrubbed)
