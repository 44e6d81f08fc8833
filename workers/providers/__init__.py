"""Provider adapters, one module per provider, registered as `lifeline.providers` entry points
(see service.delivery.providers for the interface and the registry)."""
