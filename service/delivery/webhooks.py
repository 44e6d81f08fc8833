"""Delivery reports from providers: POST /v1/webhooks/{account}.

No admin token: each provider proves itself with its own signature, which the account's
adapter checks (`WebhookReceiver.verify_webhook`) against the request exactly as the provider
sent it, at the public URL the provider called (Twilio signs the URL). A request that does
not verify gets 401 and changes nothing; the reports of one that does are applied in one
transaction (service.delivery.receipts). A report about a message Lifeline does not know is
accepted: answering an error would only make the provider retry it.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, HTTPException, Request, Response

from service.delivery.deps import Receivers
from service.delivery.providers import Inbound, WebhookReceiver, WebhookRejected, WebhookResult
from service.delivery.receipts import apply_reports
from service.kit.db import utcnow
from service.kit.deps import AppSettings, UnitOfWork
from service.kit.http import JSON

log = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])

MAX_BODY_BYTES = 1_000_000
CONFIRM_TIMEOUT_SECONDS = 5.0


async def _body(request: Request) -> bytes:
    too_large = HTTPException(status_code=413, detail=f"body over {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _public_url(public_url: str, request: Request) -> str:
    """The URL the provider called (and signed), not the one behind a proxy."""
    query = request.url.query
    path = public_url.rstrip("/") + request.url.path
    return f"{path}?{query}" if query else path


async def _confirm(account: str, url: str) -> None:
    """Amazon SNS: fetching the SubscribeURL starts the notifications. A failure answers 502,
    so SNS sends the confirmation again."""
    if urlsplit(url).scheme != "https":
        raise HTTPException(status_code=400, detail="the subscription URL is not https")
    try:
        async with httpx.AsyncClient(timeout=CONFIRM_TIMEOUT_SECONDS) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        log.warning("%s: confirming the subscription failed: %s", account, type(exc).__name__)
        raise HTTPException(status_code=502, detail="confirming the subscription failed") from None
    if not response.is_success:
        log.warning("%s: confirming the subscription got %d", account, response.status_code)
        raise HTTPException(status_code=502, detail="confirming the subscription failed")
    log.info("%s: subscription confirmed at %s", account, urlsplit(url).hostname)


async def _verify(account: str, receiver: WebhookReceiver, inbound: Inbound) -> None:
    """401 for a request the provider did not sign; 503 when the signature cannot be checked
    now, so the provider sends it again."""
    try:
        await asyncio.to_thread(receiver.verify_webhook, inbound)
    except WebhookRejected as exc:
        log.warning("webhook for %s rejected: %s", account, exc)
        raise HTTPException(
            status_code=401, detail=f"not a verifiable webhook of account {account!r}"
        ) from None
    except (TypeError, KeyError, ValueError) as exc:  # a body in a shape no provider sends
        log.warning("webhook for %s rejected: unreadable (%s)", account, type(exc).__name__)
        raise HTTPException(
            status_code=401, detail=f"not a verifiable webhook of account {account!r}"
        ) from None
    except Exception as exc:  # e.g. the provider's signing certificate could not be fetched
        log.warning("webhook for %s not verified now: %s: %s", account, type(exc).__name__, exc)
        raise HTTPException(
            status_code=503, detail="the signature cannot be checked now; send it again later"
        ) from None


@router.post(
    "/v1/webhooks/{account}",
    summary="Delivery reports from a provider account (signed by the provider)",
    responses={
        401: {"description": "the signature does not verify; nothing changed"},
        404: {"description": "no such account, or it takes no webhooks"},
    },
)
async def receive(
    account: str,
    request: Request,
    receivers: Receivers,
    settings: AppSettings,
    uow: UnitOfWork,
) -> Response:
    receiver = await receivers.receiver(account)
    inbound = Inbound(
        url=_public_url(settings.public_url, request),
        headers={name.lower(): value for name, value in request.headers.items()},
        body=await _body(request),
        method=request.method,
    )
    await _verify(account, receiver, inbound)
    try:
        result: WebhookResult = await asyncio.to_thread(receiver.parse_webhook, inbound)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=f"unreadable webhook: {exc}") from None
    if result.confirm_url:
        await _confirm(account, result.confirm_url)
    summary = {"success": True, "applied": 0, "duplicates": 0, "unknown": 0}
    if result.reports:
        applied = await uow.session.run_sync(apply_reports, account, result.reports, utcnow())
        summary.update(applied.__dict__)
        log.info(
            "webhook from %s: %d applied, %d duplicates, %d unknown",
            account,
            applied.applied,
            applied.duplicates,
            applied.unknown,
        )
    if result.response_body:
        return Response(result.response_body, media_type=result.response_type)
    return JSON(summary)
