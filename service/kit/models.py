"""Imports every model module, so Base.metadata knows every table (migrations, tests)."""

from __future__ import annotations


def import_all_models() -> None:
    import service.delivery.models
    import service.engine.tables
    import service.ingest.models
    import service.lifecycle.models
    import service.users.models  # noqa: F401
