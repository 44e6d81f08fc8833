"""Admin API for messages: find them, and read one with its status history."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query

from service.delivery import messages
from service.delivery.schemas import MessageDetail, MessageOut, Messages
from service.kit import pagination
from service.kit.deps import UnitOfWork, require_admin
from service.kit.pagination import BeforeId
from service.models import MessageStatus
from service.users.deps import profile_or_404

router = APIRouter(tags=["delivery"], dependencies=[Depends(require_admin)])


@router.get(
    "/v1/messages",
    response_model=Messages,
    summary="Messages, newest first; e.g. ?status=failed for the ones to look into",
)
async def list_messages(
    before_id: BeforeId,
    uow: UnitOfWork,
    user: str | None = Query(default=None, description="a userId"),
    rule: str | None = Query(default=None, description="a rule id"),
    status: MessageStatus | None = None,
    limit: int = Query(default=50, ge=1, le=500),
) -> Messages:
    profile_id = None if user is None else (await profile_or_404(uow.session, user)).id
    rows = await messages.find(uow.session, profile_id, rule, status, before_id, limit + 1)
    rows, next_cursor = pagination.page(rows, limit, lambda row: row[0].id)
    return Messages(
        messages=[MessageOut.of(message, user_id=user_id) for message, user_id in rows],
        next_cursor=next_cursor,
    )


@router.get(
    "/v1/messages/{message_id}",
    response_model=MessageDetail,
    summary="One message with its status history",
)
async def get_message(message_id: int, uow: UnitOfWork) -> MessageDetail:
    found = await messages.get(uow.session, message_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no message {message_id}")
    message, user_id = found
    return MessageDetail.of(
        message,
        user_id=user_id,
        history=await messages.history(uow.session, message_id),
    )
