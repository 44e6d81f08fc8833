"""The pages behind the links in messages: unsubscribe and preferences (no login, a signed
token), and the tracked links and open-counting image (service.delivery.tracking)."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.background import BackgroundTask

from service.delivery import pages, preferences, tracking
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
from service.kit.db import async_unit_of_work, utcnow
from service.kit.deps import AppSettings, DatabaseEngine, UnitOfWork
from service.kit.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["links"])

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


def _html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)


def _claims(settings: Settings, token: str) -> LinkClaims | None:
    return verify(secret_key(settings), token)


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


def _preferences_url(settings: Settings, token: str) -> str:
    return preferences_url(settings.public_url, token)


@router.get(
    UNSUBSCRIBE_PATH,
    response_class=HTMLResponse,
    summary="Asks to confirm an unsubscribe; changes nothing (link scanners fetch URLs)",
)
async def unsubscribe_page(token: str, settings: AppSettings) -> HTMLResponse:
    claims = _claims(settings, token)
    if claims is None:
        return _html(pages.invalid_link(), 400)
    return _html(
        pages.confirm_unsubscribe(claims.channel, claims.topic, _preferences_url(settings, token))
    )


@router.post(
    UNSUBSCRIBE_PATH,
    response_class=HTMLResponse,
    summary="Unsubscribe: RFC 8058 one-click (List-Unsubscribe=One-Click), or the page's form",
)
async def unsubscribe(
    token: str, request: Request, settings: AppSettings, uow: UnitOfWork
) -> HTMLResponse:
    claims = _claims(settings, token)
    if claims is None:
        return _html(pages.invalid_link(), 400)
    everything = bool((await _form(request)).get("all"))
    done = await uow.session.run_sync(preferences.unsubscribe, claims, everything, utcnow())
    if done is None:
        return _html(pages.no_profile(), 404)
    return _html(pages.unsubscribed(done, _preferences_url(settings, token)))


@router.get(
    PREFERENCES_PATH,
    response_class=HTMLResponse,
    summary="The person's subscriptions per channel and topic, as a form",
)
async def preferences_page(token: str, settings: AppSettings, uow: UnitOfWork) -> HTMLResponse:
    claims = _claims(settings, token)
    if claims is None:
        return _html(pages.invalid_link(), 400)
    state = await uow.session.run_sync(preferences.current, claims)
    if state is None:
        return _html(pages.no_profile(), 404)
    return _html(pages.preferences(state, saved=False))


@router.post(
    PREFERENCES_PATH,
    response_class=HTMLResponse,
    summary="Save the preference page's form",
)
async def save_preferences(
    token: str, request: Request, settings: AppSettings, uow: UnitOfWork
) -> HTMLResponse:
    claims = _claims(settings, token)
    if claims is None:
        return _html(pages.invalid_link(), 400)
    form = await _form(request)
    if form.get("form") != "preferences":  # an empty form would unsubscribe from everything
        return _html(pages.invalid_link(), 400)
    wanted = {
        (channel, topic)
        for channel, _, topic in (key.partition(":") for key, value in form.items() if value)
    }
    state = await uow.session.run_sync(preferences.save, claims, wanted, utcnow())
    if state is None:
        return _html(pages.no_profile(), 404)
    return _html(pages.preferences(state, saved=True))


# --- Open and click tracking --------------------------------------------------------------


@router.get(
    CLICK_PATH,
    summary="A tracked link: records the click and redirects to the URL signed in the token",
    responses={302: {"description": "to the link's URL"}, 400: {"description": "not signed"}},
)
async def tracked_click(token: str, settings: AppSettings, engine: DatabaseEngine) -> Response:
    hit = tracking.verify(secret_key(settings), token, click=True)
    if hit is None or hit.url is None:  # never a redirect to a URL we did not sign
        return _html(pages.invalid_link(), 400)
    return RedirectResponse(
        hit.url,
        status_code=302,
        headers=TRACKING_HEADERS,
        background=BackgroundTask(_record_hit, engine, hit),
    )


@router.get(
    OPEN_PATH,
    summary="The invisible image in a tracked email: records the open",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}}},
)
async def tracked_open(token: str, settings: AppSettings, engine: DatabaseEngine) -> Response:
    hit = tracking.verify(secret_key(settings), token, click=False)
    # An image that fails to load shows as a broken icon in the email: always the pixel.
    return Response(
        tracking.PIXEL,
        media_type="image/gif",
        headers=TRACKING_HEADERS,
        background=BackgroundTask(_record_hit, engine, hit) if hit is not None else None,
    )


async def _record_hit(engine: AsyncEngine, hit: tracking.Hit) -> None:
    """After the answer is sent (so its own unit of work, not the request's): a database that
    is down or slow never holds up a redirect."""
    try:
        async with async_unit_of_work(engine) as uow:
            await uow.session.run_sync(
                apply_reports, tracking.ACCOUNT, [tracking.report(hit, utcnow())], utcnow()
            )
    except Exception:
        log.exception("could not record a tracked %s of message %d", hit.kind, hit.message_id)
