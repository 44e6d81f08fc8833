"""Cursor pagination for admin lists, newest first: the cursor is the last id of a page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Query

T = TypeVar("T")


async def _before_id(
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page")] = None,
) -> int | None:
    """The id a page continues before; 400 for anything this API did not hand out."""
    if cursor is None:
        return None
    # ASCII digits only (str.isdigit takes '²'), and within a 64-bit id
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise HTTPException(status_code=400, detail="cursor: not a cursor from this API")
    return int(cursor)


# The `cursor` query parameter, as the id its page continues before.
BeforeId = Annotated[int | None, Depends(_before_id)]


def page(rows: Sequence[T], limit: int, id_of: Callable[[T], int]) -> tuple[list[T], str | None]:
    """`rows` fetched with limit + 1: the page, and the cursor of the next one if any."""
    shown = list(rows[:limit])
    return shown, (str(id_of(shown[-1])) if len(rows) > limit else None)
