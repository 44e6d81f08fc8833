"""The base of every JSON body the API answers with: read from ORM rows (`from_attributes`),
fields named in snake_case in Python and in camelCase in JSON (docs/adr/0009)."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True, alias_generator=to_camel, populate_by_name=True)

    @classmethod
    def of(cls, row: object, **extra: Any) -> Self:
        """The schema of `row`, with `extra` for the fields the row does not hold itself
        (what other queries found, or what is derived from the row)."""
        return cls.model_validate(_With(row, extra))


class _With:
    """`row`'s attributes, and `extra`'s in front of them."""

    def __init__(self, row: object, extra: dict[str, Any]) -> None:
        self._row = row
        self._extra = extra

    def __getattr__(self, name: str) -> Any:
        if name in self._extra:
            return self._extra[name]
        return getattr(self._row, name)
