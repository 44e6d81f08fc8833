"""What the rule endpoints are handed: the live rule registry, put on `app.state` by
service.app when the app starts."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.engine.registry import RuleRegistry


async def _rules(request: Request) -> RuleRegistry:
    rules: RuleRegistry = request.app.state.rules
    return rules


Rules = Annotated[RuleRegistry, Depends(_rules)]
