"""Admin API for consent: a user's subscriptions, and the suppression list."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.delivery import consent
from service.delivery.consent import InvalidAddress
from service.delivery.schemas import (
    SubscriptionIn,
    SubscriptionState,
    SuppressibleChannel,
    SuppressionIn,
    SuppressionOut,
    Suppressions,
)
from service.kit import pagination
from service.kit.db import utcnow
from service.kit.deps import UnitOfWork, require_admin
from service.kit.pagination import BeforeId
from service.models import Suppression, User
from service.users.deps import Profile

router = APIRouter(tags=["delivery"], dependencies=[Depends(require_admin)])


# --- Subscriptions --------------------------------------------------------------------------


def _subscription_state(session: Session, user: User) -> SubscriptionState:
    addresses = [
        (channel, address)
        for channel in consent.SUPPRESSIBLE
        if (address := consent.profile_address(user, channel)) is not None
    ]
    found = [
        row
        for channel, address in addresses
        if (row := session.scalar(select(Suppression).filter_by(channel=channel, address=address)))
    ]
    return SubscriptionState.model_validate(
        {
            "user_id": user.user_id,
            "subscriptions": consent.subscriptions(session, user.id),
            "suppressions": found,
        }
    )


@router.get(
    "/v1/users/{user_id}/subscriptions",
    response_model=SubscriptionState,
    summary="A user's subscriptions and suppressed addresses",
)
async def get_subscriptions(user: Profile, uow: UnitOfWork) -> SubscriptionState:
    return await uow.session.run_sync(_subscription_state, user)


@router.post(
    "/v1/users/{user_id}/subscriptions",
    response_model=SubscriptionState,
    summary="Record a subscription change a backend knows of (e.g. a settings screen)",
)
async def post_subscription(
    user: Profile, change: SubscriptionIn, uow: UnitOfWork
) -> SubscriptionState:
    def apply(session: Session) -> SubscriptionState:
        consent.set_subscription(
            session, user, change.channel, change.topic, change.subscribed, change.source, utcnow()
        )
        return _subscription_state(session, user)

    return await uow.session.run_sync(apply)


# --- The suppression list -------------------------------------------------------------------


def _address(channel: str, address: str) -> str:
    try:
        return consent.normalise_address(channel, address)
    except InvalidAddress as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


@router.get(
    "/v1/suppressions", response_model=Suppressions, summary="The suppression list, newest first"
)
async def list_suppressions(
    before_id: BeforeId,
    uow: UnitOfWork,
    channel: SuppressibleChannel | None = None,
    address: str | None = Query(default=None, description="one address (needs channel)"),
    limit: int = Query(default=100, ge=1, le=1000),
) -> Suppressions:
    query = select(Suppression)
    if address is not None:
        if channel is None:
            raise HTTPException(status_code=400, detail="address: give its channel too")
        query = query.where(Suppression.address == _address(channel, address))
    if channel is not None:
        query = query.where(Suppression.channel == channel)
    if before_id is not None:
        query = query.where(Suppression.id < before_id)
    rows = list(await uow.session.scalars(query.order_by(Suppression.id.desc()).limit(limit + 1)))
    rows, next_cursor = pagination.page(rows, limit, lambda row: row.id)
    return Suppressions(
        suppressions=[SuppressionOut.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.post(
    "/v1/suppressions",
    response_model=SuppressionOut,
    status_code=201,
    summary="Stop every message to an address; 200 when it is listed already (it keeps its "
    "entry, with a reason that also stops transactional messages taking precedence)",
)
async def add_suppression(
    entry: SuppressionIn, uow: UnitOfWork, response: Response
) -> SuppressionOut:
    address = _address(entry.channel, entry.address)

    def add(session: Session) -> Suppression:
        listed = session.scalar(
            select(Suppression.id).filter_by(channel=entry.channel, address=address)
        )
        if listed is not None:
            response.status_code = 200
        return consent.suppress(session, entry.channel, address, entry.reason, utcnow())

    return SuppressionOut.model_validate(await uow.session.run_sync(add))


@router.delete(
    "/v1/suppressions/{channel}/{address}",
    status_code=204,
    summary="Take an address off the suppression list",
)
async def remove_suppression(
    channel: SuppressibleChannel, address: str, uow: UnitOfWork
) -> Response:
    _address(channel, address)
    if not await uow.session.run_sync(consent.lift, channel, address):
        raise HTTPException(status_code=404, detail=f"{address!r} is not on the {channel} list")
    return Response(status_code=204)
