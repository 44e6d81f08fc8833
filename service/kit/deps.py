"""What kit hands to the endpoints as FastAPI dependencies: the settings, the database
engine, a unit of work per request and the admin check. service.app puts the objects on
`app.state` when the app starts; the domains' own dependencies (e.g. service.users.deps)
read theirs the same way.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from service.kit.db import AsyncUnitOfWork, JobSender, async_unit_of_work
from service.kit.settings import Settings

# The readers below are coroutines although they never wait: FastAPI runs a plain function
# dependency in a thread, which costs more than the lookup.


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def _send_job(request: Request) -> JobSender:
    send_job: JobSender = request.app.state.send_job
    return send_job


AppSettings = Annotated[Settings, Depends(_settings)]
DatabaseEngine = Annotated[AsyncEngine, Depends(_engine)]


async def _unit_of_work(
    engine: DatabaseEngine, send_job: Annotated[JobSender, Depends(_send_job)]
) -> AsyncIterator[AsyncUnitOfWork]:
    async with async_unit_of_work(engine, send_job) as uow:
        yield uow


# One transaction per request, committed before the response is sent, so a 2xx means
# committed, and a failed commit is answered as an error (a 503 for a database that went away)
# instead of a success. FastAPI runs the exit of a "function"-scoped dependency once the
# endpoint has returned and its response is built, before that response is sent; a
# "request"-scoped one (the default for dependencies with yield) exits only after the response
# has gone out. The jobs the transaction enqueued go to the broker after the commit
# (service.kit.db.async_unit_of_work).
UnitOfWork = Annotated[AsyncUnitOfWork, Depends(_unit_of_work, scope="function")]

# `auto_error=False`: the scheme is declared in OpenAPI, and the 401 below says what to send.
admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="the server's LIFELINE_ADMIN_TOKEN",
)


async def require_admin(
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    """Admin API authorisation: `Authorization: Bearer $LIFELINE_ADMIN_TOKEN`."""
    expected = settings.admin_token
    if (
        expected is None
        or not expected.get_secret_value()
        or credentials is None
        or not hmac.compare_digest(
            credentials.credentials.encode(), expected.get_secret_value().encode()
        )
    ):
        raise HTTPException(
            status_code=401,
            detail="admin API: send Authorization: Bearer <LIFELINE_ADMIN_TOKEN>"
            + ("" if expected else " (no LIFELINE_ADMIN_TOKEN is set on the server)"),
            headers={"WWW-Authenticate": "Bearer"},
        )
