"""What the /v1/users/{user_id}/... endpoints are handed: the profile the path names."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.deps import UnitOfWork
from service.kit.http import no_user
from service.models import User
from service.users.service import get_profile


async def profile_or_404(session: AsyncSession, user_id: str) -> User:
    user = await get_profile(session, user_id)
    if user is None:
        raise no_user(user_id)
    return user


async def _profile(user_id: str, uow: UnitOfWork) -> User:
    return await profile_or_404(uow.session, user_id)


# The user of the path's {user_id}, read in the request's unit of work; 404 for a user
# Lifeline does not know.
Profile = Annotated[User, Depends(_profile)]
