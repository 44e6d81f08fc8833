"""Admin API for the rule set: what is live, and why an edit did not load."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from service.engine.deps import Rules
from service.engine.schemas import RulesOut
from service.kit.deps import require_admin

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/rules", response_model=RulesOut, summary="The live rule set and any load errors")
async def rules_status(rules: Rules) -> RulesOut:
    await asyncio.to_thread(rules.reload_if_changed)
    return RulesOut.model_validate(rules.status)
