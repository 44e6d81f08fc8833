"""What the delivery endpoints are handed: the provider adapters that read delivery webhooks,
put on `app.state` by service.app when the app starts."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from service.delivery.accounts import configured_accounts
from service.delivery.providers import (
    Account,
    ProviderConfigError,
    WebhookReceiver,
    build_adapter,
)
from service.kit.settings import Settings

log = logging.getLogger(__name__)


class WebhookReceivers:
    """The provider adapter of each account, built on its first webhook and kept (with the
    error, when it cannot be built, so a misconfiguration is logged once and not rebuilt per
    request)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.adapters: dict[str, Any] = {}  # an adapter, or the ProviderConfigError
        self._accounts: dict[str, Account] | None = None  # read once: unknown names cost nothing

    async def receiver(self, account: str) -> WebhookReceiver:
        adapter = self.adapters.get(account)
        if adapter is None:
            adapter = self.adapters[account] = await self._build(account)
        if isinstance(adapter, ProviderConfigError):
            raise HTTPException(
                status_code=503,
                detail=f"provider account {account!r} is not configured correctly; see the log",
            )
        if not isinstance(adapter, WebhookReceiver):
            raise HTTPException(
                status_code=404, detail=f"account {account!r} takes no delivery webhooks"
            )
        return adapter

    async def _build(self, account: str) -> Any:
        try:
            if self._accounts is None:
                self._accounts = configured_accounts(self.settings)
            found = self._accounts.get(account)
            if found is None:
                raise HTTPException(status_code=404, detail=f"no provider account {account!r}")
            return await asyncio.to_thread(build_adapter, found, self.settings)
        except (ProviderConfigError, LookupError) as exc:
            log.error("provider account %s cannot receive webhooks: %s", account, exc)
            return ProviderConfigError(str(exc))


async def _webhook_receivers(request: Request) -> WebhookReceivers:
    receivers: WebhookReceivers = request.app.state.webhook_receivers
    return receivers


Receivers = Annotated[WebhookReceivers, Depends(_webhook_receivers)]
