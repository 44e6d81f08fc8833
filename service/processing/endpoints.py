"""Admin API for erasing a person (GDPR Art. 17): it reaches every domain's data, so its route
sits here, above them, under the users' path."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.kit.deps import UnitOfWork, require_admin
from service.processing.erasure import erase
from service.processing.schemas import Erased

router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=[Depends(require_admin)])


@router.delete("/{user_id}", response_model=Erased, summary="Erase a person's personal data")
async def delete_user(user_id: str, uow: UnitOfWork) -> Erased:
    user, scrubbed = await erase(uow.session, user_id)
    return Erased.of(user, events_scrubbed=scrubbed)
