"""Delivery over HTTP: the pages behind the links in messages (no login, a signed token), the
tracked links and open-counting image (service.delivery.tracking), and the admin API for
subscriptions, the suppression list and messages."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from service.delivery import consent, messages, pages, preferences, tracking
from service.delivery.consent import InvalidAddress
from service.delivery.links import (
    CLICK_PATH,
    OPEN_PATH,
    PREFERENCES_PATH,
    UNSUBSCRIBE_PATH,
    LinkClaims,
    preferences_url,
    secret_key,
    verify,
)
from service.delivery.receipts import apply_reports
from service.kit import pagination
from service.kit.auth import require_admin
from service.kit.db import async_unit_of_work, utcnow
from service.kit.http import no_user
from service.kit.state import AppState
from service.models import Message, MessageStatusChange, Subscription, Suppression, User
from service.users import service as users

log = logging.getLogger(__name__)

router = APIRouter(tags=["delivery"], dependencies=[Depends(require_admin)])
links_router = APIRouter(tags=["links"])

Channel = Literal["email", "sms", "push"]
Topic = Literal["acquisition", "activation", "retention", "recall", "*"]
Status = Literal[
    "queued",
    "sending",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "bounced",
    "complained",
    "failed",
    "skipped",
    "unsubscribed",
]
MAX_FORM_BYTES = 10_000
PAGE_HEADERS = {
    # No script runs, the page cannot be framed, and the token in the URL does not leak.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
}
# Every open and click must reach us: nothing may cache the answer, and the token in the URL
# is not passed on to the site the link leads to.
TRACKING_HEADERS = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.lifeline
    return state


# --- The pages behind the links ---------------------------------------------------------------


def _html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)


def _claims(request: Request, token: str) -> LinkClaims | None:
    return verify(secret_key(_state(request).settings), token)


async def _form(request: Request) -> dict[str, str]:
    """Fields of a form-encoded body (what browsers and RFC 8058 mail clients send); any other
    body counts as an empty form."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(status_code=413, detail="form too large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _preferences_url(request: Request, token: str) -> str:
    return preferences_url(_state(request).settings.public_url, token)


@links_router.get(
    UNSUBSCRIBE_PATH,
    response_class=HTMLResponse,
    summary="Asks to confirm an unsubscribe; changes nothing (link scanners fetch URLs)",
)
async def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    claims = _claims(request, token)
    if claims is None:
        return _html(pages.invalid_link(), 400)
    return _html(
        pages.confirm_unsubscribe(claims.channel, claims.topic, _preferences_url(request, token))
    )


@links_router.post(
    UNSUBSCRIBE_PATH,
    response_class=HTMLResponse,
    summary="Unsubscribe: RFC 8058 one-click (List-Unsubscribe=One-Click), or the page's form",
)
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    claims = _claims(request, token)
    if claims is None:
        return _html(pages.invalid_link(), 400)
    everything = bool((await _form(request)).get("all"))
    async with async_unit_of_work(_state(request).engine) as uow:
        done = await uow.session.run_sync(preferences.unsubscribe, claims, everything, utcnow())
    if done is None:
        return _html(pages.no_profile(), 404)
    return _html(pages.unsubscribed(done, _preferences_url(request, token)))


@links_router.get(
    PREFERENCES_PATH,
    response_class=HTMLResponse,
    summary="The person's subscriptions per channel and topic, as a form",
)
async def preferences_page(token: str, request: Request) -> HTMLResponse:
    claims = _claims(request, token)
    if claims is None:
        return _html(pages.invalid_link(), 400)
    async with async_unit_of_work(_state(request).engine) as uow:
        state = await uow.session.run_sync(preferences.current, claims)
    if state is None:
        return _html(pages.no_profile(), 404)
    return _html(pages.preferences(state, saved=False))


@links_router.post(
    PREFERENCES_PATH,
    response_class=HTMLResponse,
    summary="Save the preference page's form",
)
async def save_preferences(token: str, request: Request) -> HTMLResponse:
    claims = _claims(request, token)
    if claims is None:
        return _html(pages.invalid_link(), 400)
    form = await _form(request)
    if form.get("form") != "preferences":  # an empty form would unsubscribe from everything
        return _html(pages.invalid_link(), 400)
    wanted = {
        (channel, topic)
        for channel, _, topic in (key.partition(":") for key, value in form.items() if value)
    }
    async with async_unit_of_work(_state(request).engine) as uow:
        state = await uow.session.run_sync(preferences.save, claims, wanted, utcnow())
    if state is None:
        return _html(pages.no_profile(), 404)
    return _html(pages.preferences(state, saved=True))


@links_router.get(
    CLICK_PATH,
    summary="A tracked link: records the click and redirects to the URL signed in the token",
    responses={302: {"description": "to the link's URL"}, 400: {"description": "not signed"}},
)
async def tracked_click(token: str, request: Request) -> Response:
    state = _state(request)
    hit = tracking.verify(secret_key(state.settings), token, click=True)
    if hit is None or hit.url is None:  # never a redirect to a URL we did not sign
        return _html(pages.invalid_link(), 400)
    return RedirectResponse(
        hit.url,
        status_code=302,
        headers=TRACKING_HEADERS,
        background=BackgroundTask(_record_hit, state, hit),
    )


@links_router.get(
    OPEN_PATH,
    summary="The invisible image in a tracked email: records the open",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}}},
)
async def tracked_open(token: str, request: Request) -> Response:
    state = _state(request)
    hit = tracking.verify(secret_key(state.settings), token, click=False)
    # An image that fails to load shows as a broken icon in the email: always the pixel.
    return Response(
        tracking.PIXEL,
        media_type="image/gif",
        headers=TRACKING_HEADERS,
        background=BackgroundTask(_record_hit, state, hit) if hit is not None else None,
    )


async def _record_hit(state: AppState, hit: tracking.Hit) -> None:
    """After the answer is sent: a database that is down or slow never holds up a redirect."""
    try:
        async with async_unit_of_work(state.engine) as uow:
            await uow.session.run_sync(
                apply_reports, tracking.ACCOUNT, [tracking.report(hit, utcnow())], utcnow()
            )
    except Exception:
        log.exception("could not record a tracked %s of message %d", hit.kind, hit.message_id)


# --- Admin: subscriptions -----------------------------------------------------------------


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    topic: Topic = Field(description="a rule category, or '*' for every topic of the channel")
    subscribed: StrictBool
    source: str = Field(default="api", min_length=1, max_length=50)


class SubscriptionOut(BaseModel):
    channel: str
    topic: str
    subscribed: bool
    source: str
    updatedAt: dt.datetime


class SuppressionOut(BaseModel):
    channel: str
    address: str
    reason: str
    createdAt: dt.datetime


class SubscriptionState(BaseModel):
    userId: str
    subscriptions: list[SubscriptionOut] = Field(
        description="what the person said; a channel and topic not listed is subscribed"
    )
    suppressions: list[SuppressionOut] = Field(
        description="the user's own addresses on the suppression list"
    )


def _subscription(row: Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        channel=row.channel,
        topic=row.topic,
        subscribed=row.subscribed,
        source=row.source,
        updatedAt=row.updated_at,
    )


def _suppression(row: Suppression) -> SuppressionOut:
    return SuppressionOut(
        channel=row.channel, address=row.address, reason=row.reason, createdAt=row.created_at
    )


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
    return SubscriptionState(
        userId=user.user_id,
        subscriptions=[_subscription(row) for row in consent.subscriptions(session, user.id)],
        suppressions=[_suppression(row) for row in found],
    )


@router.get(
    "/v1/users/{user_id}/subscriptions",
    response_model=SubscriptionState,
    summary="A user's subscriptions and suppressed addresses",
)
async def get_subscriptions(user_id: str, request: Request) -> SubscriptionState:
    async with async_unit_of_work(_state(request).engine) as uow:
        user = await users.get_profile(uow.session, user_id)
        if user is None:
            raise no_user(user_id)
        return await uow.session.run_sync(_subscription_state, user)


@router.post(
    "/v1/users/{user_id}/subscriptions",
    response_model=SubscriptionState,
    summary="Record a subscription change a backend knows of (e.g. a settings screen)",
)
async def post_subscription(
    user_id: str, change: SubscriptionIn, request: Request
) -> SubscriptionState:
    async with async_unit_of_work(_state(request).engine) as uow:
        user = await users.get_profile(uow.session, user_id)
        if user is None:
            raise no_user(user_id)

        def apply(session: Session) -> SubscriptionState:
            consent.set_subscription(
                session,
                user,
                change.channel,
                change.topic,
                change.subscribed,
                change.source,
                utcnow(),
            )
            return _subscription_state(session, user)

        return await uow.session.run_sync(apply)


# --- Admin: the suppression list -------------------------------------------------------------


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["email", "sms"]
    address: str = Field(min_length=1, max_length=320)
    reason: Literal["unsubscribe", "hard_bounce", "complaint", "admin"] = Field(
        default="admin", description="another reason, e.g. when importing a provider's list"
    )


class Suppressions(BaseModel):
    suppressions: list[SuppressionOut]
    next_cursor: str | None


def _address(channel: str, address: str) -> str:
    try:
        return consent.normalise_address(channel, address)
    except InvalidAddress as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


@router.get(
    "/v1/suppressions", response_model=Suppressions, summary="The suppression list, newest first"
)
async def list_suppressions(
    request: Request,
    channel: Literal["email", "sms"] | None = None,
    address: str | None = Query(default=None, description="one address (needs channel)"),
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
) -> Suppressions:
    query = select(Suppression)
    if address is not None:
        if channel is None:
            raise HTTPException(status_code=400, detail="address: give its channel too")
        query = query.where(Suppression.address == _address(channel, address))
    if channel is not None:
        query = query.where(Suppression.channel == channel)
    before_id = pagination.before_id(cursor)
    if before_id is not None:
        query = query.where(Suppression.id < before_id)
    async with async_unit_of_work(_state(request).engine) as uow:
        rows = list(
            await uow.session.scalars(query.order_by(Suppression.id.desc()).limit(limit + 1))
        )
    rows, next_cursor = pagination.page(rows, limit, lambda row: row.id)
    return Suppressions(suppressions=[_suppression(row) for row in rows], next_cursor=next_cursor)


@router.post(
    "/v1/suppressions",
    response_model=SuppressionOut,
    status_code=201,
    summary="Stop every message to an address; 200 when it is listed already (it keeps its "
    "entry, with a reason that also stops transactional messages taking precedence)",
)
async def add_suppression(
    entry: SuppressionIn, request: Request, response: Response
) -> SuppressionOut:
    address = _address(entry.channel, entry.address)

    def add(session: Session) -> Suppression:
        listed = session.scalar(
            select(Suppression.id).filter_by(channel=entry.channel, address=address)
        )
        if listed is not None:
            response.status_code = 200
        return consent.suppress(session, entry.channel, address, entry.reason, utcnow())

    async with async_unit_of_work(_state(request).engine) as uow:
        return _suppression(await uow.session.run_sync(add))


@router.delete(
    "/v1/suppressions/{channel}/{address}",
    status_code=204,
    summary="Take an address off the suppression list",
)
async def remove_suppression(
    channel: Literal["email", "sms"], address: str, request: Request
) -> Response:
    _address(channel, address)
    async with async_unit_of_work(_state(request).engine) as uow:
        removed = await uow.session.run_sync(consent.lift, channel, address)
    if not removed:
        raise HTTPException(status_code=404, detail=f"{address!r} is not on the {channel} list")
    return Response(status_code=204)


# --- Admin: messages ------------------------------------------------------------------------


class StatusChangeOut(BaseModel):
    status: str
    detail: str | None
    at: dt.datetime


class MessageOut(BaseModel):
    id: int
    userId: str | None
    rule: str | None
    ruleVersion: str | None
    step: int | None
    variant: str | None
    journeyId: int | None
    channel: str
    template: str
    toAddress: str | None
    transactional: bool
    status: str
    statusReason: str | None
    statusAt: dt.datetime | None
    sendAt: dt.datetime
    createdAt: dt.datetime
    attempts: int
    provider: str | None
    providerMessageId: str | None


class MessageDetail(MessageOut):
    history: list[StatusChangeOut]


class Messages(BaseModel):
    messages: list[MessageOut]
    next_cursor: str | None


def _message_fields(message: Message, user_id: str | None) -> dict[str, object]:
    return {
        "id": message.id,
        "userId": user_id,
        "rule": message.rule_id,
        "ruleVersion": message.rule_version,
        "step": message.step,
        "variant": message.variant,
        "journeyId": message.journey_id,
        "channel": message.channel,
        "template": message.template,
        "toAddress": message.to_address,
        "transactional": message.transactional,
        "status": message.status,
        "statusReason": message.status_reason,
        "statusAt": message.status_at,
        "sendAt": message.send_at,
        "createdAt": message.created_at,
        "attempts": message.attempts,
        "provider": message.provider,
        "providerMessageId": message.provider_message_id,
    }


def _change(change: MessageStatusChange) -> StatusChangeOut:
    return StatusChangeOut(status=change.status, detail=change.detail, at=change.at)


@router.get(
    "/v1/messages",
    response_model=Messages,
    summary="Messages, newest first; e.g. ?status=failed for the ones to look into",
)
async def list_messages(
    request: Request,
    user: str | None = Query(default=None, description="a userId"),
    rule: str | None = Query(default=None, description="a rule id"),
    status: Status | None = None,
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
) -> Messages:
    before_id = pagination.before_id(cursor)
    async with async_unit_of_work(_state(request).engine) as uow:
        profile_id = None
        if user is not None:
            profile = await users.get_profile(uow.session, user)
            if profile is None:
                raise no_user(user)
            profile_id = profile.id
        rows = await messages.find(uow.session, profile_id, rule, status, before_id, limit + 1)
    rows, next_cursor = pagination.page(rows, limit, lambda row: row[0].id)
    return Messages(
        messages=[MessageOut.model_validate(_message_fields(m, u)) for m, u in rows],
        next_cursor=next_cursor,
    )


@router.get(
    "/v1/messages/{message_id}",
    response_model=MessageDetail,
    summary="One message with its status history",
)
async def get_message(message_id: int, request: Request) -> MessageDetail:
    async with async_unit_of_work(_state(request).engine) as uow:
        found = await messages.get(uow.session, message_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no message {message_id}")
        changes = await messages.history(uow.session, message_id)
    message, user_id = found
    return MessageDetail.model_validate(
        {**_message_fields(message, user_id), "history": [_change(c) for c in changes]}
    )
