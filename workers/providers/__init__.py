"""Provider adapters, one module per provider, found by name through entry points."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from service.delivery.accounts import find_account
from service.delivery.providers import Account, Provider
from service.kit.settings import Settings

GROUP = "lifeline.providers"


def installed() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def build_adapter(account: Account, settings: Settings) -> Any:
    """The adapter for `account`, built by its provider's entry point; it takes its
    credentials from the account's options. Raises LookupError for an unknown provider and
    ProviderConfigError for a missing option."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    if account.provider not in found:
        known = ", ".join(sorted(found)) or "none"
        raise LookupError(f"no provider {account.provider!r} is installed (installed: {known})")
    factory = found[account.provider].load()
    return factory(account, settings)


def load_provider(name: str, settings: Settings) -> Provider:
    """The adapter of the account called `name` (see service.delivery.accounts)."""
    provider: Provider = build_adapter(find_account(name, settings), settings)
    return provider
