"""Admin API for profiles: read a profile and its timeline, register the person's push
devices. (Erasure reaches every domain's data: service.processing.endpoints.)"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from service.kit import pagination
from service.kit.deps import UnitOfWork, require_admin
from service.kit.pagination import BeforeId
from service.users import devices, service
from service.users.deps import Profile
from service.users.schemas import (
    DecisionOut,
    Decisions,
    DeviceIn,
    DeviceOut,
    Devices,
    ProfileOut,
    Timeline,
    TimelineEvent,
)

router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=[Depends(require_admin)])


@router.get("/{user_id}", response_model=ProfileOut, summary="A user's profile")
async def get_user(user: Profile, uow: UnitOfWork) -> ProfileOut:
    return ProfileOut.of_user(
        user,
        await service.anonymous_ids(uow.session, user.id),
        await service.stage_history(uow.session, user.id),
    )


@router.get("/{user_id}/events", response_model=Timeline, summary="A user's events, newest first")
async def get_user_events(
    before_id: BeforeId,
    user: Profile,
    uow: UnitOfWork,
    limit: int = Query(default=50, ge=1, le=500),
) -> Timeline:
    events = await service.timeline(uow.session, user.id, before_id, limit + 1)
    events, next_cursor = pagination.page(events, limit, lambda e: e.id)
    return Timeline(
        events=[TimelineEvent.model_validate(e) for e in events], next_cursor=next_cursor
    )


@router.get(
    "/{user_id}/decisions",
    response_model=Decisions,
    summary="Why the user got, or did not get, each message: every rule decision, newest first",
)
async def get_user_decisions(
    before_id: BeforeId,
    user: Profile,
    uow: UnitOfWork,
    limit: int = Query(default=100, ge=1, le=1000),
) -> Decisions:
    rows = await service.decisions(uow.session, user.id, before_id, limit + 1)
    rows, next_cursor = pagination.page(rows, limit, lambda d: d.id)
    return Decisions(
        decisions=[DecisionOut.model_validate(d) for d in rows], next_cursor=next_cursor
    )


# --- Push devices ------------------------------------------------------------------------------


@router.get("/{user_id}/devices", response_model=Devices, summary="A user's push devices")
async def list_devices(user: Profile, uow: UnitOfWork) -> Devices:
    rows = await devices.devices(uow.session, user.id)
    return Devices(user_id=user.user_id, devices=[DeviceOut.of_device(d) for d in rows])


@router.post(
    "/{user_id}/devices",
    response_model=DeviceOut,
    status_code=201,
    summary="Register a push device (201); 200 when it was known: it is enabled again, and a "
    "device registered to another user moves to this one (someone else logged in on it)",
)
async def register_device(
    user: Profile, device: DeviceIn, uow: UnitOfWork, response: Response
) -> DeviceOut:
    if user.erased_at is not None:
        raise HTTPException(status_code=409, detail=f"user {user.user_id!r} was erased")
    row, created = await devices.register(uow.session, user, device.platform, device.token)
    if not created:
        response.status_code = 200
    return DeviceOut.of_device(row)


@router.delete(
    "/{user_id}/devices",
    status_code=204,
    summary="Remove a device by its token (e.g. at log-out); the body is the one registered",
)
async def remove_device_by_token(user: Profile, device: DeviceIn, uow: UnitOfWork) -> Response:
    if not await devices.remove_token(uow.session, user.id, device.platform, device.token):
        raise HTTPException(status_code=404, detail=f"no such device of user {user.user_id!r}")
    return Response(status_code=204)


@router.delete(
    "/{user_id}/devices/{device_id}", status_code=204, summary="Remove a device by its id"
)
async def remove_device(user: Profile, device_id: int, uow: UnitOfWork) -> Response:
    if not await devices.remove(uow.session, user.id, device_id):
        raise HTTPException(
            status_code=404, detail=f"no device {device_id} of user {user.user_id!r}"
        )
    return Response(status_code=204)
