"""Provider adapters, one module per provider, found by name through entry points."""

from __future__ import annotations

from importlib.metadata import entry_points

from service.delivery.providers import Provider
from service.kit.settings import Settings

GROUP = "lifeline.providers"


def load_provider(name: str, settings: Settings) -> Provider:
    """The provider registered as `name` in the lifeline.providers entry points; it reads
    its own configuration (credentials from the environment) from `settings`."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise LookupError(f"no provider {name!r} is installed (installed: {known})")
    factory = found[name].load()
    provider: Provider = factory(settings)
    return provider
